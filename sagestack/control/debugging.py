"""Debugger and profiler around one training job: samplers, rule runs, uploads.

A job that asks for it gets a system sampler per instance (beside the
process, never inside its loop), the in-process hooks (``SAGESTACK_DEBUG_ROOT``
tells the algorithm where to write), rule evaluations every
``RULE_INTERVAL`` seconds while it trains and once at the end, and its
``profiler-output/``, ``debug-output/`` and ``rule-output/`` trees uploaded to
the S3 prefixes SageMaker uses.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sagestack.db.base import utcnow
from sagestack.db.models.training import TrainingJob
from sagestack.debugger.profiler import SystemSampler, mark_job_end
from sagestack.debugger.runner import DEBUG_KEY, PROFILER_KEY, run_rules_by_kind
from sagestack.storage import files

log = logging.getLogger("sagestack.debugger")
RULE_INTERVAL = float(os.environ.get("SAGESTACK_RULE_INTERVAL", "60"))


class JobDebugger:
    def __init__(self, db: Any, store: Any, job: TrainingJob, job_dir: Path) -> None:
        self.db, self.store, self.job_dir = db, store, job_dir
        self.name, self.arn = job.name, job.arn
        request = job.request
        self.request = request
        profiler = request.get("ProfilerConfig") or {}
        self.profiling = bool(profiler) and not profiler.get("DisableProfiler", False)
        self.interval_ms = int(profiler.get("ProfilingIntervalInMilliseconds") or 500)
        self.debug_rules = request.get("DebugRuleConfigurations") or []
        self.profiler_rules = request.get("ProfilerRuleConfigurations") or []
        self.hooked = self.profiling or bool(request.get("DebugHookConfig"))
        self._samplers: list[SystemSampler] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.time()

    @property
    def has_rules(self) -> bool:
        return bool(self.debug_rules or self.profiler_rules)

    def env(self) -> dict[str, str]:
        return {"SAGESTACK_DEBUG_ROOT": str(self.job_dir)} if self.hooked else {}

    def start(self, instances: list[tuple[str, Callable[[], list[int]]]]) -> None:
        """``instances``: (host, pids provider) for every instance that just started."""
        self._started = time.time()
        if self.profiling:
            for host, pids in instances:
                sampler = SystemSampler(pids, self.interval_ms, self.job_dir / "profiler-output", host)
                self._samplers.append(sampler.start())
        if self.has_rules:
            self._thread = threading.Thread(target=self._periodic, name=f"rules:{self.name}", daemon=True)
            self._thread.start()

    def _periodic(self) -> None:
        while not self._stop.wait(RULE_INTERVAL):
            self._evaluate(final=False)

    def finish(self, status: str) -> None:
        """Stop sampling, run the rules one last time and upload everything."""
        self._stop.set()
        for sampler in self._samplers:
            sampler.stop()
        if self.profiling:
            mark_job_end(self.job_dir / "profiler-output")
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.has_rules:
            if status == "Stopped":
                self._mark_rules("Stopped")
            else:
                self._evaluate(final=True)
        self._upload()

    def _evaluate(self, final: bool) -> None:
        try:
            results = run_rules_by_kind(self.job_dir, self.debug_rules, self.profiler_rules, final,
                                        job_name=self.name, job_start=self._started,
                                        job_end=time.time() if final else None)
        except Exception:
            log.exception("rule evaluation failed for %s", self.name)
            return
        self._store(results[DEBUG_KEY], results[PROFILER_KEY])

    def _store(self, debug: list[dict[str, Any]], profiler: list[dict[str, Any]]) -> None:
        with self.db.transaction() as session:
            job = session.get(TrainingJob, self.name)
            if job is None:
                return
            job.debug_rule_statuses = [self._row(item) for item in debug]
            job.profiler_rule_statuses = [self._row(item) for item in profiler]
            job.last_modified = utcnow()

    def _row(self, item: dict[str, Any]) -> dict[str, Any]:
        row = dict(item)
        when = row.get("LastModifiedTime")
        row["LastModifiedTime"] = when.timestamp() if hasattr(when, "timestamp") else time.time()
        rule = str(row.get("RuleConfigurationName", "rule")).lower()
        row["RuleEvaluationJobArn"] = self.arn.replace(":training-job/", ":processing-job/") + f"-{rule}"[:40]
        return row

    def _mark_rules(self, status: str) -> None:
        now = time.time()
        with self.db.transaction() as session:
            job = session.get(TrainingJob, self.name)
            if job is None:
                return
            job.debug_rule_statuses = [{**r, "RuleEvaluationStatus": status, "LastModifiedTime": now}
                                       for r in job.debug_rule_statuses]
            job.profiler_rule_statuses = [{**r, "RuleEvaluationStatus": status, "LastModifiedTime": now}
                                          for r in job.profiler_rule_statuses]

    def _upload(self) -> None:
        targets = [
            ("profiler-output", (self.request.get("ProfilerConfig") or {}).get("S3OutputPath")),
            ("debug-output", (self.request.get("DebugHookConfig") or {}).get("S3OutputPath")),
            ("rule-output", self.request["OutputDataConfig"]["S3OutputPath"]),
        ]
        for folder, base in targets:
            local = self.job_dir / folder
            if not base or not local.is_dir():
                continue
            try:
                bucket, prefix = files.parse_s3_uri(base)
                root = f"{prefix.rstrip('/')}/{self.name}/{folder}" if prefix.strip("/") else f"{self.name}/{folder}"
                files.upload_tree(self.store, local, bucket, root, skip_hidden=True)
            except Exception:
                log.exception("uploading %s of %s failed", folder, self.name)
