"""Runs a job's rule configurations and writes the rule reports.

The platform calls :func:`run_rules` (or :func:`run_rules_by_kind`) every
minute or so while a job trains (``final=False``) and once after it ended
(``final=True``), and stores the returned items as the job's
``DebugRuleEvaluationStatuses`` / ``ProfilerRuleEvaluationStatuses``.
Each item has ``RuleConfigurationName``, ``RuleEvaluationStatus``,
``StatusDetails`` (omitted when empty) and ``LastModifiedTime`` (an aware UTC
datetime); the platform adds ``RuleEvaluationJobArn``.

Which built-in rule a configuration runs is its ``rule_to_invoke`` parameter
(the SDK always sends it), else its name without a ``-<digits>`` suffix.
While the job runs, a rule is ``InProgress`` until it triggers
(``IssuesFound``, which then sticks: every run re-evaluates all data so far);
the final run turns undecided rules into ``NoIssuesFound``. Unknown rules,
custom rule sources and bad parameters give ``Error``.

Reports, written on every run so they can be downloaded while the job trains
(layout as observed on SageMaker, under ``<rule-output>/``)::

    <RuleConfigurationName>/profiler-output/profiler-report.html
    <RuleConfigurationName>/profiler-output/profiler-reports/<SubRule>.json
    <RuleConfigurationName>/xgboost_report.html
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sagestack.debugger.data import JobData, JobPaths
from sagestack.debugger.reports.profiler_report import write_profiler_report
from sagestack.debugger.reports.xgboost_report import write_xgboost_report
from sagestack.debugger.rules import (
    ERROR,
    IN_PROGRESS,
    ISSUES,
    NO_ISSUES,
    PROFILER_REPORT_RULES,
    RuleResult,
    evaluate,
    split_profiler_report_params,
)

log = logging.getLogger(__name__)

DEBUG_KEY = "DebugRuleEvaluationStatuses"
PROFILER_KEY = "ProfilerRuleEvaluationStatuses"


def rule_to_invoke(config: Mapping[str, Any]) -> str:
    params = config.get("RuleParameters") or {}
    name = str(params.get("rule_to_invoke") or "").strip()
    return name or re.sub(r"-\d+$", "", str(config.get("RuleConfigurationName", "")))


def profiler_report_dir(paths: JobPaths, config_name: str) -> Path:
    return paths.rule_output / config_name / "profiler-output"


def xgboost_report_path(paths: JobPaths, config_name: str) -> Path:
    return paths.rule_output / config_name / "xgboost_report.html"


def initial_statuses(debug_rule_configs: Sequence[Mapping[str, Any]] | None,
                     profiler_rule_configs: Sequence[Mapping[str, Any]] | None,
                     now: datetime | None = None) -> dict[str, list[dict[str, Any]]]:
    """``InProgress`` for every configured rule, for CreateTrainingJob."""
    when = now or datetime.now(UTC)
    def items(configs: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
        return [{"RuleConfigurationName": c["RuleConfigurationName"], "RuleEvaluationStatus": IN_PROGRESS,
                 "LastModifiedTime": when} for c in configs or []]
    return {DEBUG_KEY: items(debug_rule_configs), PROFILER_KEY: items(profiler_rule_configs)}


def run_rules(job_dir_or_paths: Path | str | JobPaths,
              debug_rule_configs: Sequence[Mapping[str, Any]] | None,
              profiler_rule_configs: Sequence[Mapping[str, Any]] | None,
              final: bool, **kwargs: Any) -> list[dict[str, Any]]:
    """Statuses of the debug rule configurations, then of the profiler ones, in configuration order."""
    by_kind = run_rules_by_kind(job_dir_or_paths, debug_rule_configs, profiler_rule_configs, final, **kwargs)
    return by_kind[DEBUG_KEY] + by_kind[PROFILER_KEY]


def run_rules_by_kind(job_dir_or_paths: Path | str | JobPaths,
                      debug_rule_configs: Sequence[Mapping[str, Any]] | None,
                      profiler_rule_configs: Sequence[Mapping[str, Any]] | None,
                      final: bool, *, job_name: str | None = None, job_start: float | None = None,
                      job_end: float | None = None, now: float | None = None) -> dict[str, list[dict[str, Any]]]:
    """Like :func:`run_rules`, keyed by ``DebugRuleEvaluationStatuses`` / ``ProfilerRuleEvaluationStatuses``.

    ``job_start``/``job_end`` are UNIX seconds of the job's start and (final runs) end, when known.
    """
    paths = job_dir_or_paths if isinstance(job_dir_or_paths, JobPaths) else JobPaths.under(job_dir_or_paths)
    data = JobData(paths, job_name=job_name, job_start=job_start, job_end=job_end, now=now)
    debug = _run_group(data, debug_rule_configs or [], final)
    profiler = _run_group(data, profiler_rule_configs or [], final)
    return {DEBUG_KEY: debug, PROFILER_KEY: profiler}


def _run_group(data: JobData, configs: Sequence[Mapping[str, Any]], final: bool) -> list[dict[str, Any]]:
    results: dict[int, RuleResult] = {}
    # Plain rules first: CreateXgboostReport lists their findings.
    order = sorted(range(len(configs)), key=lambda i: rule_to_invoke(configs[i]) in ("CreateXgboostReport",
                                                                                      "ProfilerReport"))
    for i in order:
        results[i] = _run_one(data, configs[i], [results[j] for j in sorted(results)], final)
    when = datetime.now(UTC)
    return [_status(str(configs[i].get("RuleConfigurationName", "")), results[i], when)
            for i in range(len(configs))]


def _run_one(data: JobData, config: Mapping[str, Any], others: list[RuleResult], final: bool) -> RuleResult:
    name = str(config.get("RuleConfigurationName", ""))
    params = dict(config.get("RuleParameters") or {})
    rule = rule_to_invoke(config)
    if params.get("source_s3_uri"):
        return RuleResult(rule, ERROR, "Custom rules (source_s3_uri) are not supported: sagestack runs only "
                                       "SageMaker's built-in rules.")
    try:
        if rule == "ProfilerReport":
            return _profiler_report(data, name, params, final)
        if rule == "CreateXgboostReport":
            return _xgboost_report(data, name, others, final)
        return evaluate(rule, params, data, final=final)
    except Exception as exc:  # a rule must never break the job's status updates
        log.exception("rule configuration %s failed", name)
        return RuleResult(rule, ERROR, f"Rule {rule} failed: {type(exc).__name__}: {exc}"[:1024])


def _status(config_name: str, result: RuleResult, when: datetime) -> dict[str, Any]:
    item: dict[str, Any] = {"RuleConfigurationName": config_name, "RuleEvaluationStatus": result.status,
                            "LastModifiedTime": when}
    if result.status_details:
        item["StatusDetails"] = result.status_details
    return item


def _profiler_report(data: JobData, config_name: str, params: Mapping[str, Any], final: bool) -> RuleResult:
    sub_params = split_profiler_report_params(params)
    results = [evaluate(rule, sub_params[rule], data, final=final) for rule in PROFILER_REPORT_RULES]
    out = profiler_report_dir(data.paths, config_name)
    reports = out / "profiler-reports"
    reports.mkdir(parents=True, exist_ok=True)
    for r in results:
        _write_json(reports / f"{r.rule}.json", r.report_json())
    write_profiler_report(out / "profiler-report.html", data, results)
    return _summary("ProfilerReport", results, final, "profiler report")


def _xgboost_report(data: JobData, config_name: str, others: list[RuleResult], final: bool) -> RuleResult:
    if not data.debug.present:
        msg = "No Debugger data: the job needs a DebugHookConfig (the report's collections) to build the report."
        return RuleResult("CreateXgboostReport", NO_ISSUES if final else IN_PROGRESS, msg)
    write_xgboost_report(xgboost_report_path(data.paths, config_name), data, others)
    status = NO_ISSUES if final else IN_PROGRESS
    return RuleResult("CreateXgboostReport", status, "XGBoost training report generated.")


def _summary(rule: str, results: list[RuleResult], final: bool, what: str) -> RuleResult:
    triggered = [r.rule for r in results if r.status == ISSUES]
    errors = [r.rule for r in results if r.status == ERROR]
    parts = []
    if triggered:
        parts.append(f"Issues found by {', '.join(triggered)}")
    if errors:
        parts.append(f"errors in {', '.join(errors)}")
    so_far = "" if final else " so far"
    detail = ("; ".join(parts) + f"{so_far}. See the {what}.") if parts else f"No issues found{so_far}. See the {what}."
    if triggered:
        status = ISSUES
    elif errors:
        status = ERROR
    else:
        status = NO_ISSUES if final else IN_PROGRESS
    return RuleResult(rule, status, detail, triggered=len(triggered))


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_plain(obj), indent=2, allow_nan=False))
    tmp.replace(path)


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy values become Python ones, NaN and infinities become null."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)
