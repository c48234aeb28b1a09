"""The profiler report (``profiler-report.html``): job summary, system usage, utilization over time,
framework metrics and the findings of every profiler rule."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sagestack.debugger.data import JobData, Series
from sagestack.debugger.reports.layout import (
    HEATMAP_COLUMNS,
    PALETTE,
    Raw,
    card,
    downsample,
    esc,
    fmt_seconds,
    fmt_time,
    fmt_value,
    note,
    page,
    plot,
    rule_badge,
    section,
    table,
    write_atomically,
)
from sagestack.debugger.rules.engine import ERROR, IN_PROGRESS, ISSUES, NO_ISSUES, RuleResult
from sagestack.debugger.rules.profiling import system_usage


def write_profiler_report(path: Path, data: JobData, results: Sequence[RuleResult]) -> Path:
    """Write ``profiler-report.html`` for the job."""
    return write_atomically(path, ProfilerReport(data, results).render())


class ProfilerReport:
    def __init__(self, data: JobData, results: Sequence[RuleResult]) -> None:
        self.data = data
        self.results = list(results)
        self.summary = data.training_summary()
        self.t0 = data.job_start or 0.0
        duration = self.summary.get("job_duration_in_seconds") or 0.0
        self.minutes = duration > 1800  # long jobs read better in minutes

    def _x(self, t: np.ndarray) -> np.ndarray:
        rel = t - self.t0
        return rel / 60.0 if self.minutes else rel

    @property
    def _xtitle(self) -> str:
        return "Time since job start (min)" if self.minutes else "Time since job start (s)"

    def render(self) -> str:
        name = self.data.job_name or "training job"
        sections = [
            ("summary", "Summary", self._cards()),
            ("job", "Training job summary", self._job_summary()),
            ("system", "System usage statistics", self._system_stats()),
            ("utilization", "Resource utilization over time", self._utilization()),
            ("framework", "Framework metrics summary", self._framework()),
            ("rules", "Rules summary", self._rules_summary()),
            ("analysis", "Rule analysis", self._analysis()),
        ]
        sub = f"Training job <b>{esc(name)}</b> · {esc(fmt_time(self.data.job_start))} → " \
              f"{esc(fmt_time(self.data.job_end))}"
        return page(f"Profiler report — {name}", sub, [(a, t) for a, t, _ in sections],
                    "".join(body for _, _, body in sections))

    # -- summary cards

    def _cards(self) -> str:
        s = self.summary
        triggered = [r for r in self.results if r.status == ISSUES]
        nodes = self.data.system.nodes
        peak_cpu = max((float(self.data.system.cpu_total(n).v.max()) for n in nodes
                        if len(self.data.system.cpu_total(n))), default=None)
        mem = [self.data.system.get(n, "memory", "MemoryUsedPercent") for n in nodes]
        peak_mem = max((float(m.v.max()) for m in mem if len(m)), default=None)
        cards = [
            card("Job duration", fmt_seconds(s.get("job_duration_in_seconds")), fmt_time(s.get("start_time"))),
            card("Training loop", fmt_seconds(s.get("training_loop_in_seconds")),
                 f"{s['training_loop_percent']:.0f}% of the job" if "training_loop_percent" in s else "no steps"),
            card("Rules with issues", f"{len(triggered)} / {len(self.results)}",
                 self._rules_hint(triggered), "bad" if triggered else "ok"),
            card("Peak CPU", fmt_value(peak_cpu, "%"), "machine-wide, all cores"),
            card("Peak memory", fmt_value(peak_mem, "%"), "of the machine's RAM"),
            card("GPU", "yes" if self.data.system.has_gpu else "none", "GPU rules need one"),
        ]
        return f'<div id="summary" class="cards">{"".join(cards)}</div>'

    def _rules_hint(self, triggered: list[RuleResult]) -> str:
        if triggered:
            return ", ".join(r.rule for r in triggered)
        inapplicable = sum(not r.applicable for r in self.results)
        return f"all applicable rules passed; {inapplicable} not applicable" if inapplicable else "all rules passed"

    # -- training job summary

    def _job_summary(self) -> str:
        s = self.summary
        rows = [
            ("Start time", fmt_time(s.get("start_time"))),
            ("End time", fmt_time(s.get("end_time"))),
            ("Job duration", fmt_seconds(s.get("job_duration_in_seconds"))),
            ("Training loop start", fmt_time(s.get("training_loop_start"))),
            ("Training loop end", fmt_time(s.get("training_loop_end"))),
            ("Training loop duration", fmt_seconds(s.get("training_loop_in_seconds"))),
            ("Initialization", fmt_seconds(s.get("initialization_in_seconds"))),
            ("Finalization", fmt_seconds(s.get("finalization_in_seconds"))),
        ]
        for part in ("initialization", "training_loop", "finalization"):
            if f"{part}_percent" in s:
                rows.append((f"{part.replace('_', ' ').capitalize()} share", f"{s[f'{part}_percent']:.1f}%"))
        body = f'<div class="grid2"><div>{table(["Metric", "Value"], rows, numeric=[1])}</div>' \
               f"<div>{self._phase_chart()}</div></div>"
        lead = ("How the job's time splits between initialization (start until the first boosting round: "
                "downloading and parsing data, building the DMatrix), the training loop, and finalization "
                "(saving the model, uploading output).")
        return section("job", "Training job summary", lead, body)

    def _phase_chart(self) -> str:
        s = self.summary
        if "training_loop_in_seconds" not in s:
            return note("No training loop recorded: framework metrics are needed to split the job into phases.")
        fig = go.Figure()
        start = s["start_time"]
        bars = [("Initialization", start, s["training_loop_start"]),
                ("Training loop", s["training_loop_start"], s["training_loop_end"]),
                ("Finalization", s["training_loop_end"], s["end_time"])]
        bars += [(e.name, e.start, e.end) for e in self.data.framework if e.phase in ("SETUP", "FINALIZE")]
        for i, (label, a, b) in enumerate(bars):
            fig.add_trace(go.Bar(
                y=[label], x=[self._x(np.array([b]))[0] - self._x(np.array([a]))[0]],
                base=[self._x(np.array([a]))[0]], orientation="h", name=label,
                marker_color=PALETTE[i % len(PALETTE)],
                hovertemplate=f"{label}<br>start %{{base:.2f}}<br>duration %{{x:.2f}}<extra></extra>"))
        fig.update_layout(title="Job phases", showlegend=False, barmode="overlay", xaxis_title=self._xtitle,
                          yaxis={"autorange": "reversed"})
        return plot(fig, 300)

    # -- system statistics

    def _system_stats(self) -> str:
        rows = []
        for node in self.data.system.nodes:
            for metric, st in system_usage(self.data, node).items():
                unit = st["unit"]
                rows.append([node, metric, unit] + [fmt_value(st.get(k), unit) for k in
                                                    ("max", "p99", "p95", "p50", "min")])
        lead = ("Statistics of every system metric sampled during the job, per node. p99/p95/p50 are "
                "percentiles: p95 = 95% of the samples were at or below this value. CPU is the mean over all "
                "cores of the machine; 'training processes' counts only the job's own process tree.")
        if not rows:
            return section("system", "System usage statistics", lead,
                           note("No system metrics: the profiler was disabled or has not sampled yet.", True))
        gpu = "" if self.data.system.has_gpu else note("This instance has no GPU: GPU metrics and GPU rules "
                                                         "do not apply.")
        usage = table(["Node", "Metric", "Unit", "Max", "p99", "p95", "p50", "Min"], rows,
                      numeric=[3, 4, 5, 6, 7])
        return section("system", "System usage statistics", lead, gpu + usage)

    # -- utilization plots

    def _utilization(self) -> str:
        lead = "Interactive charts of the sampled system metrics. Drag to zoom into a time range; the legend " \
               "toggles lines; hover shows the exact values."
        nodes = self.data.system.nodes
        if not nodes:
            return section("utilization", "Resource utilization over time", lead,
                           note("No system metrics recorded.", True))
        parts = []
        for node in nodes:
            if len(nodes) > 1:
                parts.append(f"<h3>{esc(node)}</h3>")
            parts += [self._cpu_plot(node), self._core_heatmap(node), self._memory_plot(node),
                      self._io_plot(node)]
            if self.data.system.has_gpu:
                parts.append(self._gpu_plot(node))
        return section("utilization", "Resource utilization over time", lead, "".join(parts))

    def _line(self, fig: go.Figure, s: Series, name: str, scale: float = 1.0, unit: str = "",
              visible: bool | str = True, **kw: Any) -> None:
        if len(s) == 0:
            return
        x, y = downsample(self._x(s.t), s.v * scale)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=name, visible=visible,
                                 hovertemplate=f"%{{y:.2f}} {unit}<extra>{esc(name)}</extra>", **kw))

    def _cpu_plot(self, node: str) -> str:
        sysm = self.data.system
        fig = go.Figure()
        self._line(fig, sysm.cpu_total(node), "CPU, all cores (machine)", unit="%", line={"width": 2.5})
        self._line(fig, sysm.get(node, "process", "ProcessCPUUtilization", "Algorithm"),
                   "CPU used by the training processes", unit="%")
        self._line(fig, sysm.mean_of(node, "I/OWaitPercentage"), "I/O wait", unit="%")
        for name, s in sysm.by_dimension(node, "CPUUtilization").items():
            self._line(fig, s, name, unit="%", visible="legendonly", line={"width": 1})
        fig.update_layout(title="CPU utilization (%) — click core names in the legend to show them",
                          xaxis_title=self._xtitle, yaxis={"title": "%", "range": [0, 105]}, hovermode="x unified")
        return plot(fig)

    def _core_heatmap(self, node: str) -> str:
        cores = self.data.system.by_dimension(node, "CPUUtilization")
        if not cores:
            return ""
        t = cores[next(iter(cores))].t
        edges = np.linspace(t[0], t[-1] + 1e-9, min(len(t), HEATMAP_COLUMNS) + 1)
        z = []
        for s in cores.values():
            idx = np.clip(np.searchsorted(edges, s.t, side="right") - 1, 0, len(edges) - 2)
            sums = np.bincount(idx, weights=s.v, minlength=len(edges) - 1)
            counts = np.bincount(idx, minlength=len(edges) - 1)
            z.append(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan))
        centers = self._x((edges[:-1] + edges[1:]) / 2)
        fig = go.Figure(go.Heatmap(z=z, x=centers, y=list(cores), zmin=0, zmax=100, colorscale="Blues",
                                   colorbar={"title": "%"},
                                   hovertemplate="%{y} at %{x:.1f}: %{z:.1f}%<extra></extra>"))
        fig.update_layout(title="CPU utilization per core", xaxis_title=self._xtitle)
        return plot(fig, max(220, 60 + 18 * len(cores)))

    def _memory_plot(self, node: str) -> str:
        sysm = self.data.system
        fig = make_subplots(specs=[[{"secondary_y": True}]])
        mem = sysm.get(node, "memory", "MemoryUsedPercent")
        rss = sysm.get(node, "process", "ProcessMemoryRSSBytes", "Algorithm")
        if len(mem):
            x, y = downsample(self._x(mem.t), mem.v)
            fig.add_trace(go.Scatter(x=x, y=y, name="Machine memory used (%)", mode="lines",
                                     hovertemplate="%{y:.1f}%<extra>machine</extra>"), secondary_y=False)
        if len(rss):
            x, y = downsample(self._x(rss.t), rss.v / 2**30)
            fig.add_trace(go.Scatter(x=x, y=y, name="Training processes RSS (GiB)", mode="lines",
                                     hovertemplate="%{y:.2f} GiB<extra>training processes</extra>"),
                          secondary_y=True)
        fig.update_layout(title="Memory", xaxis_title=self._xtitle, hovermode="x unified")
        fig.update_yaxes(title_text="% of RAM", secondary_y=False, rangemode="tozero")
        fig.update_yaxes(title_text="GiB", secondary_y=True, rangemode="tozero", showgrid=False, tickformat=".2f")
        return plot(fig)

    def _io_plot(self, node: str) -> str:
        sysm = self.data.system
        fig = go.Figure()
        mb = 1 / 2**20
        self._line(fig, sysm.get(node, "i/o", "ReadThroughputInBytesPerSecond"), "Disk read", mb, "MiB/s")
        self._line(fig, sysm.get(node, "i/o", "WriteThroughputInBytesPerSecond"), "Disk write", mb, "MiB/s")
        self._line(fig, sysm.get(node, "network", "ReceiveBytesPerSecond", "Platform"), "Network receive", mb,
                   "MiB/s")
        self._line(fig, sysm.get(node, "network", "TransmitBytesPerSecond", "Platform"), "Network transmit", mb,
                   "MiB/s")
        fig.update_layout(title="Disk and network throughput (MiB/s)", xaxis_title=self._xtitle,
                          yaxis={"title": "MiB/s", "rangemode": "tozero"}, hovermode="x unified")
        return plot(fig)

    def _gpu_plot(self, node: str) -> str:
        fig = go.Figure()
        for name, s in self.data.system.gpus(node).items():
            self._line(fig, s, f"{name} utilization", unit="%")
        for name, s in self.data.system.by_dimension(node, "GPUMemoryUtilization").items():
            self._line(fig, s, f"{name} memory", unit="%", line={"dash": "dot"})
        fig.update_layout(title="GPU utilization and memory (%)", xaxis_title=self._xtitle,
                          yaxis={"range": [0, 105]}, hovermode="x unified")
        return plot(fig)

    # -- framework metrics

    def _framework(self) -> str:
        lead = ("Time measured inside the training process: each boosting round (Step, the TRAIN phase), the "
                "evaluation of the eval sets after it (EVAL), Debugger saves, and the phases the algorithm "
                "reports, such as data loading.")
        events = [e for e in self.data.framework if e.name != "TrainingLoop"]
        if not events:
            return section("framework", "Framework metrics summary", lead,
                           note("No framework metrics: profiling was disabled or no round has run yet.", True))
        totals: dict[str, float] = {}
        for e in events:
            totals[e.name] = totals.get(e.name, 0.0) + e.duration
        pie = go.Figure(go.Pie(labels=list(totals), values=list(totals.values()), hole=0.45, sort=True,
                               hovertemplate="%{label}: %{value:.2f} s (%{percent})<extra></extra>"))
        pie.update_layout(title="Where the training process spent its time")
        grand = sum(totals.values()) or 1.0
        phases = {e.name: e.phase for e in events}
        counts = {n: sum(1 for e in events if e.name == n) for n in totals}
        shares = table(["Event", "Phase", "Count", "Total", "Share"],
                       [[n, phases[n], counts[n], fmt_seconds(t), f"{100 * t / grand:.1f}%"]
                         for n, t in sorted(totals.items(), key=lambda kv: -kv[1])], numeric=[2, 3, 4])
        body = f'<div class="grid2"><div><h3>Time by event</h3>{shares}</div><div>{plot(pie, 380)}</div></div>'
        body += self._step_table() + self._step_plot() + self._step_histogram()
        return section("framework", "Framework metrics summary", lead, body)

    def _step_table(self) -> str:
        rows = []
        for name, label in (("Step", "TRAIN (boosting round)"), ("Evaluation", "EVAL (evaluation)"),
                            ("DebugSave", "Debugger save")):
            for node in sorted({e.node for e in self.data.framework}):
                d = np.array([e.duration for e in self.data.events(name) if e.node == node])
                if len(d) == 0:
                    continue
                q = np.percentile(d, [99, 95, 50])
                rows.append([node, label, len(d), fmt_seconds(d.sum()), fmt_seconds(d.mean()),
                             fmt_seconds(d.max()), fmt_seconds(q[0]), fmt_seconds(q[1]), fmt_seconds(q[2]),
                             fmt_seconds(d.min())])
        return "<h3>Step durations</h3>" + table(
            ["Node", "Phase", "Count", "Total", "Mean", "Max", "p99", "p95", "p50", "Min"], rows,
            numeric=list(range(2, 10)))

    def _step_plot(self) -> str:
        fig = go.Figure()
        for name, label in (("Step", "TRAIN: boosting round"), ("Evaluation", "EVAL: evaluation")):
            ev = [e for e in self.data.events(name) if e.step is not None]
            if ev:
                x, y = downsample(np.array([e.step for e in ev], float), np.array([e.duration for e in ev]) * 1e3)
                fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=label, marker={"size": 4},
                                         hovertemplate="round %{x:.0f}: %{y:.1f} ms<extra>" + label + "</extra>"))
        outlier = next((r for r in self.results if r.rule == "StepOutlier"), None)
        if outlier:
            for key, st in outlier.details.items():
                if key.endswith("/TRAIN") and "limit" in st:
                    fig.add_hline(y=st["limit"] * 1e3, line_dash="dash", line_color="#e11d48",
                                  annotation_text="outlier limit (TRAIN)", annotation_position="top left")
        fig.update_layout(title="Duration of each round (ms)", xaxis_title="Boosting round",
                          yaxis={"title": "ms", "rangemode": "tozero"}, hovermode="x unified")
        return plot(fig)

    def _step_histogram(self) -> str:
        d = np.array([e.duration for e in self.data.events("Step")]) * 1e3
        if len(d) < 2:
            return ""
        counts, edges = np.histogram(d, bins=min(40, max(5, len(d) // 3)))
        fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges),
                               hovertemplate="%{x:.1f} ms: %{y} rounds<extra></extra>", marker_color=PALETTE[0]))
        fig.update_layout(title="Distribution of boosting-round durations", xaxis_title="ms",
                          yaxis_title="rounds", bargap=0.05)
        return plot(fig, 300)

    # -- rules

    def _rules_summary(self) -> str:
        order = {ISSUES: 0, ERROR: 1, IN_PROGRESS: 2, NO_ISSUES: 3}
        rows = []
        for r in sorted(self.results, key=lambda r: (order.get(r.status, 4), not r.applicable, r.rule)):
            params = "<br>".join(f"{esc(k)}: {esc(v)}" for k, v in r.parameters.items() if k != "scan_interval_us")
            finding = r.status_details.removeprefix("RuleEvaluationConditionMet: ")
            rows.append([Raw(f'<b>{esc(r.rule)}</b><div class="params">{esc(r.description)}</div>'),
                         Raw(rule_badge(r)), finding, r.triggered, r.violations, r.datapoints,
                         r.recommendation, Raw(f'<span class="params">{params}</span>')])
        lead = ("Every profiler rule: what it found, how often, and what to do about it. 'Triggered' counts the "
                "evaluations (one per scan interval of the timeline) in which the rule's condition was met; "
                "'Violations' counts the offending datapoints or steps; 'Datapoints' how many it looked at. "
                "Rules that analyse GPUs do not apply on instances without one: they are marked 'Not applicable'.")
        summary = table(["Rule", "Status", "Finding", "Triggered", "Violations", "Datapoints", "Recommendation",
                         "Parameters"], rows, numeric=[3, 4, 5])
        return section("rules", "Rules summary", lead, summary)

    def _analysis(self) -> str:
        cards = []
        for r in sorted(self.results, key=lambda r: (r.status != ISSUES, r.rule)):
            notes = "".join(f"<p><i>{esc(n)}</i></p>" for n in r.notes if n not in r.status_details)
            cards.append(f'<div class="rule{" bad" if r.status == ISSUES else ""}"><h4>{esc(r.rule)} '
                         f"{rule_badge(r)}</h4><p>{esc(r.status_details or r.description)}</p>{notes}"
                         f"{self._rule_extra(r)}</div>")
        lead = "The finding of each rule in words, with the numbers behind it."
        return section("analysis", "Rule analysis", lead, "".join(cards))

    def _rule_extra(self, r: RuleResult) -> str:
        if r.rule == "StepOutlier" and r.details:
            rows = [[k, st.get("outliers", 0), fmt_seconds(st.get("mean")), fmt_seconds(st.get("limit")),
                     ", ".join(map(str, st.get("outlier_steps", [])[:15]))] for k, st in r.details.items()]
            return table(["Node / mode", "Outliers", "Mean", "Limit", "Outlier rounds"], rows, numeric=[1, 2, 3])
        if r.rule == "OverallFrameworkMetrics" and r.details.get("events"):
            rows = [[k, v["phase"], v["count"], fmt_seconds(v["total_seconds"]), f"{v['percent']:.1f}%"]
                    for k, v in sorted(r.details["events"].items(), key=lambda kv: -kv[1]["total_seconds"])]
            return table(["Event", "Phase", "Count", "Total", "Share"], rows, numeric=[2, 3, 4])
        if r.rule == "MaxInitializationTime" and "initialization_seconds" in r.details:
            return f"<p>Initialization took {esc(fmt_seconds(r.details['initialization_seconds']))}.</p>"
        return ""

