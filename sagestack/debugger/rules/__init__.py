"""SageMaker Debugger's built-in XGBoost and profiler rules, evaluated over local job data.

``evaluate(rule_name, params, data)`` runs one rule. ``params`` are the
``RuleParameters`` strings of the rule configuration (unknown keys such as
``rule_to_invoke`` are ignored; a value that does not parse is an ``Error``).
Parameters and defaults are those AWS documents (for profiler rules, the
values the SDK's rule configurations ship with). The logic is sagestack's own
reading of the rule descriptions; where the description is ambiguous the
choice is stated in the rule's docstring.

``RULES`` is the catalogue: the profiler rules (:mod:`.profiling`), the
Debugger rules (:mod:`.training`) and the two report rules, which the runner
implements by writing reports. :mod:`.engine` holds what they share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sagestack.debugger.data import JobData
from sagestack.debugger.rules import profiling, training
from sagestack.debugger.rules.engine import (
    ERROR,
    IN_PROGRESS,
    ISSUES,
    NO_ISSUES,
    Check,
    Registry,
    RuleResult,
    RuleSpec,
    clip,
    evaluate_spec,
)

__all__ = ["ERROR", "IN_PROGRESS", "ISSUES", "NO_ISSUES", "PROFILER_REPORT_RULES", "RULES", "RuleResult",
           "evaluate", "split_profiler_report_params"]

#: Sub-rules of ProfilerReport, in the order of its per-rule JSON files.
PROFILER_REPORT_RULES = (
    "BatchSize", "CPUBottleneck", "Dataloader", "GPUMemoryIncrease", "IOBottleneck", "LoadBalancing",
    "LowGPUUtilization", "MaxInitializationTime", "OverallFrameworkMetrics", "OverallSystemUsage", "StepOutlier",
)


def _report_rules() -> Registry:
    def spec(name: str, description: str) -> RuleSpec:
        def fn(p: dict[str, Any], data: JobData) -> Check:
            return Check(False, f"{name} report generated.")
        return RuleSpec(name, "report", (), description, "Open the HTML report.", fn)

    return {
        "CreateXgboostReport": spec(
            "CreateXgboostReport", "Builds the XGBoost training report (xgboost_report.html) from the Debugger "
            "collections: label distribution, loss per round, feature importance, confusion matrix, ROC, "
            "residuals."),
        "ProfilerReport": spec(
            "ProfilerReport", "Runs every profiler rule and builds the profiler report (profiler-report.html)."),
    }


RULES: Registry = {**profiling.RULES, **training.RULES, **_report_rules()}


def evaluate(rule_name: str, params: Mapping[str, Any] | None, data: JobData, *, final: bool = True) -> RuleResult:
    """Evaluate one built-in rule. ``final`` is False while the job still runs (undecided -> InProgress)."""
    spec = RULES.get(rule_name)
    if spec is None or spec.fn is None:
        known = ", ".join(sorted(n for n, s in RULES.items() if s.fn is not None))
        return RuleResult(rule_name, ERROR, clip(f"Unknown rule '{rule_name}'. Built-in rules supported by "
                                                 f"sagestack: {known}."))
    return evaluate_spec(spec, params, data, final=final)


def split_profiler_report_params(params: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{"CPUBottleneck_threshold": "70"}`` -> ``{"CPUBottleneck": {"threshold": "70"}}``."""
    out: dict[str, dict[str, Any]] = {name: {} for name in PROFILER_REPORT_RULES}
    for key, value in (params or {}).items():
        rule, sep, param = key.partition("_")
        if sep and rule in out:
            out[rule][param] = value
    return out
