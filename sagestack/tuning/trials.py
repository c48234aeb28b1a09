"""The persisted facts about one training job of a tuning job, as the tuner reads them.

The tuner keeps no state of its own between calls: the platform records one
:class:`TrialRecord` per training job it launched (or is about to launch) and
hands the whole list back to every new :class:`~sagestack.tuning.tuner.Tuner`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: SageMaker ``TrainingJobStatus`` values after which a job never changes again.
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})

#: Statuses whose objective value can make a job the tuning job's best one. A job
#: stopped by early stopping or Hyperband still reports the last objective value it
#: emitted, and SageMaker keeps such jobs in the ranking.
RANKED_STATUSES = frozenset({"Completed", "Stopped"})


@dataclass(frozen=True)
class TrialRecord:
    """One training job of a tuning job.

    ``index`` is the 0-based launch order inside the tuning job; it must be stable
    (it seeds Random and Hyperband). ``hyperparameters`` are the string values the
    job was given (what :meth:`Tuner.next_trials` returned; extra static keys are
    ignored). ``status`` is a SageMaker ``TrainingJobStatus``; anything not terminal
    (``InProgress``, ``Stopping``, or a platform-side ``Pending``) counts as running.
    ``objective`` is the latest objective value the job emitted (None while none was
    seen). ``intermediate`` holds one objective value per epoch, in order: for
    XGBoost, the ``validation:<metric>`` value of each boosting round.
    """

    index: int
    hyperparameters: Mapping[str, str]
    status: str = "InProgress"
    objective: float | None = None
    intermediate: Sequence[float] = field(default_factory=tuple)
    name: str | None = None

    @property
    def running(self) -> bool:
        return self.status not in TERMINAL_STATUSES

    @property
    def ranked(self) -> bool:
        """True when the job may be the best one: it ended normally with a finite objective."""
        return self.status in RANKED_STATUSES and self.objective is not None and math.isfinite(self.objective)

    @classmethod
    def coerce(cls, value: TrialRecord | Mapping[str, Any]) -> TrialRecord:
        """Accept a record or a plain mapping with the same keys (e.g. a DB row as a dict)."""
        if isinstance(value, TrialRecord):
            return value
        objective = value.get("objective")
        return cls(
            index=int(value["index"]),
            hyperparameters=dict(value.get("hyperparameters") or {}),
            status=str(value.get("status") or "InProgress"),
            objective=None if objective is None else float(objective),
            intermediate=tuple(float(v) for v in value.get("intermediate") or ()),
            name=value.get("name"),
        )


def coerce_all(values: Sequence[TrialRecord | Mapping[str, Any]]) -> list[TrialRecord]:
    """Records sorted by index, so that every rebuild sees them in the same order."""
    return sorted((TrialRecord.coerce(v) for v in values), key=lambda r: r.index)
