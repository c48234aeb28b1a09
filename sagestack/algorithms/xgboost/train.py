"""Entry point of a built-in XGBoost training instance: ``python -m sagestack.algorithms.xgboost.train``.

Kept free of heavy imports: the OpenMP wait policy must be in the
environment before xgboost's native library (and its OpenMP runtime) loads.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    """Run one training instance; returns the exit code (0, or 1 with ``output/failure`` written)."""
    # Spinning OpenMP threads starve everything else sharing the cores (other
    # instances of the job, endpoints, the server): 2 s rounds became 20 s on a
    # busy 2-core machine. Sleeping waiters cost a few percent when idle.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from sagestack.algorithms.xgboost import trainer

    return trainer.main()


if __name__ == "__main__":
    sys.exit(main())
