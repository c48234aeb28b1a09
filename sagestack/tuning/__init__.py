"""Automatic model tuning (CreateHyperParameterTuningJob) as pure logic.

No HTTP, no database, no processes: the platform feeds requests and recorded trials in,
and gets suggestions, stop decisions, completion and the best trial out. See
:mod:`sagestack.tuning.tuner` for the reconcile-loop contract.
"""

from sagestack.tuning.completion import Completion
from sagestack.tuning.space import ParameterSpec, SearchSpace, TuningValidationError, parse_ranges
from sagestack.tuning.trials import TrialRecord
from sagestack.tuning.tuner import OBJECTIVE_HYPERPARAMETER, Tuner, TuningConfig, parse_request, validate

__all__ = [
    "OBJECTIVE_HYPERPARAMETER",
    "Completion",
    "ParameterSpec",
    "SearchSpace",
    "TrialRecord",
    "Tuner",
    "TuningConfig",
    "TuningValidationError",
    "parse_ranges",
    "parse_request",
    "validate",
]
