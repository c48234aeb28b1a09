"""Which training images sagestack can run, and how.

SageMaker names its built-in XGBoost by ECR image URI; any account and region
work here: ``<acct>.dkr.ecr.<region>.amazonaws.com/sagemaker-xgboost:<version>``
and the legacy first-party ``.../xgboost:<tag>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_XGBOOST_IMAGE = re.compile(r"^(?:[^/]+/)?(?:sagemaker-xgboost|xgboost)(?::(?P<tag>[^/@]+))?(?:@sha256:[0-9a-f]+)?$")


@dataclass(frozen=True)
class Algorithm:
    name: str
    version: str
    #: Python module run as ``python -m <module>`` inside each instance.
    train_module: str

    def metric_definitions(self) -> list[dict[str, str]]:
        from sagestack.algorithms.xgboost.metrics import metric_definitions

        return metric_definitions()

    def tuning_objectives(self) -> dict[str, Any]:
        from sagestack.algorithms.xgboost.metrics import tuning_objective_metrics

        return tuning_objective_metrics()


def resolve_image(image: str) -> Algorithm | None:
    """The algorithm behind a training image URI, or None if sagestack cannot run it."""
    match = _XGBOOST_IMAGE.match(image.strip())
    if match is None:
        return None
    return Algorithm("xgboost", match.group("tag") or "latest", "sagestack.algorithms.xgboost.train")
