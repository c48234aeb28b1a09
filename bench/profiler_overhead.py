"""Training-time overhead of the profiler: system sampler at 500 ms + framework hook, vs neither.

Trains the same XGBoost model on Adult-sized synthetic data (32,561 rows, 108
mostly one-hot columns, split 80/20 into train and validation like the seed
tutorial) with the tutorial's hyperparameters, alternately

* plain: ``xgboost.train`` with the train and validation eval sets;
* profiled: the same, plus :class:`SystemSampler` at 500 ms and the callbacks
  of :func:`make_callbacks` for the SDK's default configuration
  (``ProfilerConfig`` on, ``DebugHookConfig`` with no collections, i.e.
  metrics every 10 rounds).

The sampler runs as a thread of this very process, sampling this process: a
harsher setting than the platform's, which samples from its own process.
Runs alternate (plain, profiled, profiled, plain, ...) so drift hits both
sides alike. Each run is timed two ways:

* wall clock: what a user waits for. On a shared machine other processes only
  ever add time, so the verdict uses the best run of each side (the median of
  the paired ratios is printed too);
* CPU time of this process (training, callbacks and the sampler thread): the
  work the profiler adds, which other processes' load does not change, as
  long as training is single-threaded (``--nthread 1``; OpenMP threads spin
  while they wait for each other, and more so on a busy machine).

The script also measures each component directly (CPU per sample,
microseconds per round of the callbacks). Target: <= 5%.

    python bench/profiler_overhead.py [--params tutorial|deep] [--rounds 300] [--pairs 6] [--nthread N]
                                      [--interval-ms 500] [--check]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xgboost as xgb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sagestack.debugger.hook import make_callbacks, record_phase
from sagestack.debugger.profiler import SystemSampler

TUTORIAL = {"objective": "binary:logistic", "max_depth": 5, "eta": 0.2, "gamma": 4, "min_child_weight": 6,
            "subsample": 0.8, "verbosity": 0}
#: Bigger trees: rounds of a few tens of ms instead of ~2 ms, like most real jobs.
DEEP = {"objective": "binary:logistic", "max_depth": 8, "eta": 0.1, "min_child_weight": 1, "subsample": 0.8,
        "colsample_bytree": 0.8, "verbosity": 0}
TARGET_PERCENT = 5.0


def adult_like(rows: int = 32_561, seed: int = 1729) -> tuple[np.ndarray, np.ndarray]:
    """6 numeric columns and 102 one-hot columns from 8 categoricals, with a label that depends on both."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, 6)).astype(np.float32)
    sizes = [9, 16, 7, 15, 6, 5, 2, 42]  # category counts of Adult's categorical columns
    blocks, effect = [], np.zeros(rows)
    for k in sizes:
        codes = rng.integers(0, k, size=rows)
        blocks.append(np.eye(k, dtype=np.float32)[codes])
        effect += rng.normal(scale=0.6, size=k)[codes]
    logit = 1.2 * numeric[:, 0] - 0.8 * numeric[:, 1] + 0.6 * numeric[:, 2] * numeric[:, 3] + effect - 1.0
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return np.hstack([numeric, *blocks]), y


def train_once(params: dict, dtrain: xgb.DMatrix, dvalid: xgb.DMatrix, rounds: int, profiled: bool,
               interval_ms: int, workdir: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one training."""
    evals = [(dtrain, "train"), (dvalid, "validation")]
    hps = {k: str(v) for k, v in params.items()}
    if not profiled:
        wall, cpu = time.perf_counter(), time.process_time()
        xgb.train(params, dtrain, rounds, evals=evals, verbose_eval=False)
        return time.perf_counter() - wall, time.process_time() - cpu
    out = Path(tempfile.mkdtemp(dir=workdir))
    # The platform starts and stops the sampler outside the training process: not timed.
    sampler = SystemSampler(lambda: [os.getpid()], interval_ms, out / "profiler-output").start()
    wall, cpu = time.perf_counter(), time.process_time()
    t0 = time.time()
    callbacks = make_callbacks(out, {"CollectionConfigurations": []},
                               {"ProfilingIntervalInMilliseconds": interval_ms}, dtrain, dvalid, hps)
    record_phase(out, "Initialization", t0, time.time())
    xgb.train(params, dtrain, rounds, evals=evals, callbacks=callbacks, verbose_eval=False)
    elapsed = time.perf_counter() - wall, time.process_time() - cpu
    sampler.stop()
    return elapsed


def direct_costs(params: dict, dtrain: xgb.DMatrix, dvalid: xgb.DMatrix, interval_ms: int,
                 workdir: Path) -> tuple[float, float]:
    """(sampler CPU ms per sample, callbacks microseconds per round), measured in isolation."""
    out = Path(tempfile.mkdtemp(dir=workdir))
    sampler = SystemSampler(lambda: [os.getpid()], interval_ms, out / "profiler-output")
    sampler.sample()
    cpu, n = 0.0, 0
    end = time.monotonic() + 3.0  # several process-tree refreshes (once a second) included
    while time.monotonic() < end:
        time.sleep(0.05)
        t = time.thread_time()
        sampler.sample()
        cpu += time.thread_time() - t
        n += 1
    sampler.flush()
    bst = xgb.train(params, dtrain, 1)
    callbacks = make_callbacks(out, {"CollectionConfigurations": []}, {}, dtrain, dvalid, {})
    for cb in callbacks:
        bst = cb.before_training(bst)
    rounds = 5000
    log: dict = {"train": {"logloss": []}, "validation": {"logloss": []}}
    start = time.perf_counter()
    for i in range(rounds):
        for cb in callbacks:
            cb.before_iteration(bst, i, log)
        log["train"]["logloss"].append(0.5)
        log["validation"]["logloss"].append(0.6)
        for cb in callbacks:
            cb.after_iteration(bst, i, log)
    per_round = (time.perf_counter() - start) / rounds
    for cb in callbacks:
        bst = cb.after_training(bst)
    return 1e3 * cpu / n, 1e6 * per_round


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--params", choices=("tutorial", "deep"), default="tutorial",
                        help="tutorial: the seed tutorial's hyperparameters (tiny trees, the hook's worst case)")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--nthread", type=int, default=0, help="xgboost threads (default: all cores)")
    parser.add_argument("--interval-ms", type=int, default=500)
    parser.add_argument("--check", action="store_true", help=f"exit 1 if the overhead exceeds {TARGET_PERCENT}%%")
    args = parser.parse_args()

    X, y = adult_like()
    n_train = int(len(y) * 0.8)
    dtrain, dvalid = xgb.DMatrix(X[:n_train], y[:n_train]), xgb.DMatrix(X[n_train:], y[n_train:])
    params = dict(TUTORIAL if args.params == "tutorial" else DEEP)
    if args.nthread:
        params["nthread"] = args.nthread
    print(f"data: {len(y)} rows x {X.shape[1]} columns; {args.params} hyperparameters, {args.rounds} rounds; "
          f"sampler every {args.interval_ms} ms; xgboost {xgb.__version__}; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        train_once(params, dtrain, dvalid, 5, False, args.interval_ms, workdir)  # warm-up: page cache, OpenMP pool
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for i in range(args.pairs):
            order = (False, True) if i % 2 == 0 else (True, False)
            for p in order:
                runs[p].append(train_once(params, dtrain, dvalid, args.rounds, p, args.interval_ms, workdir))
            (pw, pc), (qw, qc) = runs[False][-1], runs[True][-1]
            print(f"pair {i + 1}: plain {pw:.2f} s wall / {pc:.2f} s CPU, profiled {qw:.2f} s / {qc:.2f} s "
                  f"({100 * (qw / pw - 1):+.1f}% wall, {100 * (qc / pc - 1):+.1f}% CPU)")
        sample_ms, hook_us = direct_costs(params, dtrain, dvalid, args.interval_ms, workdir)
    results = {}
    for k, name in ((0, "wall"), (1, "CPU")):
        plain, prof = [r[k] for r in runs[False]], [r[k] for r in runs[True]]
        paired = 100 * (statistics.median(q / p for p, q in zip(plain, prof, strict=True)) - 1)
        results[name] = 100 * (min(prof) / min(plain) - 1)
        print(f"{name:>4}: plain best {min(plain):.2f} s (median {statistics.median(plain):.2f}), profiled best "
              f"{min(prof):.2f} s (median {statistics.median(prof):.2f}) -> {results[name]:+.1f}% "
              f"(median of paired ratios {paired:+.1f}%)")
    round_us = 1e6 * min(r[0] for r in runs[False]) / args.rounds
    sampler_pct = 100 * sample_ms / args.interval_ms / (os.cpu_count() or 1)
    direct = 100 * hook_us / round_us + sampler_pct
    print(f"direct costs: sampler {sample_ms:.2f} ms CPU per sample ({sampler_pct:.2f}% of the machine at "
          f"{args.interval_ms} ms); callbacks {hook_us:.1f} us per round ({100 * hook_us / round_us:.2f}% of a "
          f"{round_us / 1e3:.2f} ms round) -> expected overhead {direct:.2f}%")
    overhead = results["wall"]
    verdict = "PASS" if overhead <= TARGET_PERCENT else "FAIL"
    print(f"overhead: {overhead:+.1f}% wall, {results['CPU']:+.1f}% CPU -> {verdict} "
          f"(target <= {TARGET_PERCENT:.0f}%)")
    return 1 if args.check and verdict == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
