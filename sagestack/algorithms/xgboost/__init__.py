"""SageMaker's built-in XGBoost algorithm ("algorithm mode"), training side.

One training instance is one process::

    SM_OPT_ML=<dir> python -m sagestack.algorithms.xgboost.train

(:mod:`.train` only sets ``OMP_WAIT_POLICY=PASSIVE`` unless already set, then
runs :func:`.trainer.main`.)

**Inputs** (under ``$SM_OPT_ML``, default ``/opt/ml``):

- ``input/config/hyperparameters.json``: string values, validated like
  SageMaker's container (see :mod:`.hyperparameters`); ``num_round`` is required.
- ``input/config/inputdataconfig.json``: channels ``train`` (required),
  ``validation`` (optional), ``code``; any other is ``Extraneous channel found: <name>``.
  ContentType defaults to ``text/libsvm``; the train channel's type is used
  for validation too. ``File``/``FastFile`` (and ``Pipe`` except for libsvm)
  are accepted and read as files in ``input/data/<channel>/`` (any depth).
- ``input/config/resourceconfig.json``: ``current_host`` and ``hosts``
  (absent: a single ``algo-1``).
- ``input/config/checkpointconfig.json`` (optional): ``LocalPath`` for spot
  checkpoints ``xgboost-checkpoint.<round>`` (``/opt/ml/...`` is mapped under
  ``$SM_OPT_ML``); training resumes from the newest.
- Environment: ``SM_NUM_CPUS`` (optional) caps the default ``nthread``, which
  is the number of CPUs in the process's affinity mask. With several hosts:
  ``SAGESTACK_TRACKER_HOST``/``SAGESTACK_TRACKER_PORT`` (the first host runs
  XGBoost's tracker there and on port + 1; every instance gets the same
  values) and optionally ``SAGESTACK_COLLECTIVE_TIMEOUT`` (seconds, 900).

**Outputs:**

- stdout: log lines ``[YYYY-mm-dd:HH:MM:SS:LEVEL] message`` and, on the
  master, one line per round ``[i]#011train-<metric>:<v>#011validation-<metric>:<v>``
  (values ``.5f``; ``#011`` is written literally, as CloudWatch shows the TAB).
  :func:`.metrics.metric_definitions` gives the regexes for them.
- ``model/xgboost-model``: the booster, written by the master only (rank 0:
  the first host with data), in xgboost's default format for a file name
  without extension (UBJSON in xgboost >= 2.1; ``xgboost.Booster().load_model``
  reads it). With early stopping it is cut to the best round.
- exit code 0 on success (also for a host of a distributed job that had no
  data and so took no part); on failure exit code 1 and ``output/failure``
  holding the message (a traceback follows only for unexpected exceptions).
  A host that stops because *another* host failed waits 2 s (so that the
  failing host exits first), then writes ``Host(s) <h> failed before
  training; stopping.`` or ``Lost the other hosts during training...``.

**Metrics:** ``eval_metric`` (comma list) plus the metric of
``_tuning_objective_metric`` (sorted union). ``accuracy``, ``f1``,
``precision``, ``recall`` (and their variants), ``mse`` and ``r2`` are
computed by the container (:mod:`.custom_metrics`), the rest by xgboost.
Early stopping needs ``early_stopping_rounds``, a validation channel and a
named metric: the tuning objective, else the last ``eval_metric``.

**Distributed training:** see :mod:`.distributed` (two collective rounds,
hosts without data leave, the first host with data is rank 0 and the only
one that writes ``model/``).
"""
