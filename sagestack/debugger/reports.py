"""The two HTML reports: the profiler report and the XGBoost training report.

Each report is one self-contained HTML file: plotly.js is inlined once in the
page head (no CDN, no network), every chart is an interactive plotly figure
(zoom, pan, hover), and the page explains itself for readers who never saw
the API. Long time series are averaged down to at most ``MAX_POINTS`` points
per line so reports of long jobs stay small and fast.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from sagestack.debugger.data import JobData, Series
from sagestack.debugger.rules import (
    ERROR,
    IN_PROGRESS,
    ISSUES,
    NO_ISSUES,
    RuleResult,
    confusion_matrix,
    predicted_classes,
    system_usage,
)

MAX_POINTS = 1500
HEATMAP_COLUMNS = 400
PALETTE = ["#2563eb", "#f97316", "#10b981", "#e11d48", "#8b5cf6", "#0891b2", "#ca8a04", "#64748b"]
CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}

CSS = """
:root{--ink:#0f172a;--muted:#475569;--line:#e2e8f0;--bg:#f8fafc;--card:#fff;--accent:#2563eb;
--ok:#047857;--okbg:#ecfdf5;--bad:#b91c1c;--badbg:#fef2f2;--warn:#92400e;--warnbg:#fffbeb;--info:#1e40af;
--infobg:#eff6ff}
*{box-sizing:border-box}
body{margin:0;font:15px/1.55 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--ink);background:var(--bg)}
.wrap{max-width:1180px;margin:0 auto;padding:0 24px}
header.hero{background:linear-gradient(120deg,#0f172a,#1e3a8a);color:#fff;padding:34px 0 28px}
header.hero .eyebrow{text-transform:uppercase;letter-spacing:.12em;font-size:12px;opacity:.75}
header.hero h1{margin:6px 0 4px;font-size:30px;font-weight:650}
header.hero .sub{margin:0;opacity:.85}
nav.toc{display:flex;flex-wrap:wrap;gap:6px;padding:14px 24px;position:sticky;top:0;background:rgba(248,250,252,.95);
border-bottom:1px solid var(--line);z-index:10;backdrop-filter:blur(4px)}
nav.toc a{color:var(--muted);text-decoration:none;font-size:13px;padding:4px 10px;border-radius:999px;
border:1px solid var(--line);background:#fff}
nav.toc a:hover{color:var(--accent);border-color:var(--accent)}
section{background:var(--card);border:1px solid var(--line);border-radius:14px;padding:22px 24px;margin:22px 0;
box-shadow:0 1px 2px rgba(15,23,42,.04)}
section h2{margin:0 0 6px;font-size:21px}
section h3{margin:22px 0 6px;font-size:16px}
p.lead{color:var(--muted);margin:0 0 14px;max-width:900px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:14px;margin:22px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:14px 16px}
.card .label{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted)}
.card .value{font-size:24px;font-weight:650;margin-top:2px}
.card .hint{font-size:12.5px;color:var(--muted)}
.card.bad{border-color:#fecaca;background:var(--badbg)}.card.ok{border-color:#a7f3d0;background:var(--okbg)}
table{border-collapse:collapse;width:100%;font-size:13.5px;margin:8px 0}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:#f1f5f9;font-weight:600;color:#334155;position:sticky;top:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:hover td{background:#f8fafc}
.badge{display:inline-block;padding:2px 9px;border-radius:999px;font-size:12px;font-weight:600;white-space:nowrap}
.badge.ok{color:var(--ok);background:var(--okbg)}.badge.bad{color:var(--bad);background:var(--badbg)}
.badge.warn{color:var(--warn);background:var(--warnbg)}.badge.info{color:var(--info);background:var(--infobg)}
.note{border-left:4px solid #93c5fd;background:var(--infobg);padding:10px 14px;border-radius:8px;margin:10px 0;
color:#1e3a8a;font-size:14px}
.note.warn{border-color:#fcd34d;background:var(--warnbg);color:var(--warn)}
.plot{width:100%;margin:6px 0 12px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.grid2>div{min-width:0}
@media (max-width:900px){.grid2{grid-template-columns:1fr}}
.rule{border:1px solid var(--line);border-radius:10px;padding:12px 16px;margin:10px 0}
.rule.bad{border-color:#fecaca}
.rule h4{margin:0 0 4px;font-size:15px;display:flex;gap:10px;align-items:center}
.rule p{margin:4px 0;color:#334155;font-size:14px}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.params{color:var(--muted);font-size:12px}
footer{color:var(--muted);font-size:12.5px;padding:20px 0 40px;text-align:center}
"""


# ------------------------------------------------------------------ formatting helpers


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt_seconds(secs: float | None) -> str:
    if secs is None or not math.isfinite(secs):
        return "–"
    if secs < 1:
        return f"{secs * 1000:.0f} ms"
    if secs < 120:
        return f"{secs:.1f} s"
    if secs < 7200:
        return f"{secs / 60:.1f} min"
    return f"{secs / 3600:.2f} h"


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "–"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_value(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if unit in ("bytes", "bytes/s"):
        for prefix in ("", "K", "M", "G", "T"):
            if abs(value) < 1024 or prefix == "T":
                suffix = "B" if unit == "bytes" else "B/s"
                return f"{value:.1f} {prefix}{suffix}" if prefix else f"{value:.0f} {suffix}"
            value /= 1024
    if unit == "%":
        return f"{value:.1f}%"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if value == 0 or abs(value) >= 0.01:
        return f"{value:.4g}"
    return f"{value:.3e}"


def _badge(status: str) -> str:
    tone = {NO_ISSUES: "ok", ISSUES: "bad", ERROR: "warn", IN_PROGRESS: "info"}.get(status, "info")
    label = {NO_ISSUES: "No issues", ISSUES: "Issues found", ERROR: "Error", IN_PROGRESS: "In progress"}
    return f'<span class="badge {tone}">{_e(label.get(status, status))}</span>'


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped unless wrapped in :class:`Raw`."""
    def cell(tag: str, i: int, value: Any) -> str:
        cls = ' class="num"' if i in numeric else ""
        body = value.html if isinstance(value, Raw) else _e(value)
        return f"<{tag}{cls}>{body}</{tag}>"
    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Raw:
    """Trusted HTML for :func:`_table` cells."""

    def __init__(self, html_text: str) -> None:
        self.html = html_text


def _card(label: str, value: str, hint: str = "", tone: str = "") -> str:
    return (f'<div class="card {tone}"><div class="label">{_e(label)}</div><div class="value">{_e(value)}</div>'
            f'<div class="hint">{_e(hint)}</div></div>')


def _note(text: str, warn: bool = False) -> str:
    return f'<div class="note{" warn" if warn else ""}">{_e(text)}</div>'


def _section(anchor: str, title: str, lead: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2><p class="lead">{_e(lead)}</p>{body}</section>'


def _plot(fig: go.Figure, height: int = 380) -> str:
    fig.update_layout(template="plotly_white", height=height,
                      font={"family": "-apple-system, Segoe UI, Roboto, Arial, sans-serif", "size": 12},
                      colorway=PALETTE, hoverlabel={"namelength": -1})
    # House style, unless the figure chose otherwise: legend below the plot, compact margins.
    if fig.layout.legend.orientation is None:
        fig.update_layout(legend={"orientation": "h", "y": -0.18, "x": 0})
    if fig.layout.margin.t is None:
        fig.update_layout(margin={"l": 60, "r": 24, "t": 48, "b": 48})
    body = fig.to_html(full_html=False, include_plotlyjs=False, config=CONFIG, default_width="100%",
                       default_height=f"{height}px")
    return f'<div class="plot">{body}</div>'


def _page(title: str, subtitle: str, toc: list[tuple[str, str]], body: str) -> str:
    nav = "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in toc)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style>"
        # plotly.js inlined once: the report must open without network access.
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f'<header class="hero"><div class="wrap"><div class="eyebrow">sagestack · SageMaker Debugger</div>'
        f"<h1>{_e(title)}</h1><p class=\"sub\">{subtitle}</p></div></header>"
        f'<nav class="toc">{nav}</nav><main class="wrap">{body}</main>'
        # Charts are drawn while the page is still parsed; size them again once the layout is final.
        "<script>window.addEventListener('load',function(){document.querySelectorAll('.js-plotly-plot')"
        ".forEach(function(p){Plotly.Plots.resize(p);});});</script>"
        f'<footer>Generated by sagestack on {_e(fmt_time(time.time()))}. Charts: drag to zoom, double-click to '
        "reset, hover for values.</footer></body></html>\n"
    )


def _write(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def downsample(x: np.ndarray, y: np.ndarray, limit: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Bucket means, so a long series keeps its shape in at most ``limit`` points."""
    if len(x) <= limit:
        return x, y
    edges = np.linspace(0, len(x), limit + 1).astype(np.int64)
    counts = np.diff(edges)
    return np.add.reduceat(x, edges[:-1]) / counts, np.add.reduceat(y, edges[:-1]) / counts


# ------------------------------------------------------------------ profiler report


def write_profiler_report(path: Path, data: JobData, results: Sequence[RuleResult]) -> Path:
    """Write ``profiler-report.html`` for the job."""
    return _write(path, ProfilerReport(data, results).render())


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
        sub = f"Training job <b>{_e(name)}</b> · {_e(fmt_time(self.data.job_start))} → " \
              f"{_e(fmt_time(self.data.job_end))}"
        return _page(f"Profiler report — {name}", sub, [(a, t) for a, t, _ in sections],
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
            _card("Job duration", fmt_seconds(s.get("job_duration_in_seconds")), fmt_time(s.get("start_time"))),
            _card("Training loop", fmt_seconds(s.get("training_loop_in_seconds")),
                  f"{s['training_loop_percent']:.0f}% of the job" if "training_loop_percent" in s else "no steps"),
            _card("Rules with issues", f"{len(triggered)} / {len(self.results)}",
                  ", ".join(r.rule for r in triggered) or "all rules passed", "bad" if triggered else "ok"),
            _card("Peak CPU", fmt_value(peak_cpu, "%"), "machine-wide, all cores"),
            _card("Peak memory", fmt_value(peak_mem, "%"), "of the machine's RAM"),
            _card("GPU", "yes" if self.data.system.has_gpu else "none", "GPU rules need one"),
        ]
        return f'<div id="summary" class="cards">{"".join(cards)}</div>'

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
        body = f'<div class="grid2"><div>{_table(["Metric", "Value"], rows, numeric=[1])}</div>' \
               f"<div>{self._phase_chart()}</div></div>"
        lead = ("How the job's time splits between initialization (start until the first boosting round: "
                "downloading and parsing data, building the DMatrix), the training loop, and finalization "
                "(saving the model, uploading output).")
        return _section("job", "Training job summary", lead, body)

    def _phase_chart(self) -> str:
        s = self.summary
        if "training_loop_in_seconds" not in s:
            return _note("No training loop recorded: framework metrics are needed to split the job into phases.")
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
        return _plot(fig, 300)

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
            return _section("system", "System usage statistics", lead,
                            _note("No system metrics: the profiler was disabled or has not sampled yet.", True))
        gpu = "" if self.data.system.has_gpu else _note("This instance has no GPU: GPU metrics and GPU rules "
                                                         "do not apply.")
        table = _table(["Node", "Metric", "Unit", "Max", "p99", "p95", "p50", "Min"], rows,
                       numeric=[3, 4, 5, 6, 7])
        return _section("system", "System usage statistics", lead, gpu + table)

    # -- utilization plots

    def _utilization(self) -> str:
        lead = "Interactive charts of the sampled system metrics. Drag to zoom into a time range; the legend " \
               "toggles lines; hover shows the exact values."
        nodes = self.data.system.nodes
        if not nodes:
            return _section("utilization", "Resource utilization over time", lead,
                            _note("No system metrics recorded.", True))
        parts = []
        for node in nodes:
            if len(nodes) > 1:
                parts.append(f"<h3>{_e(node)}</h3>")
            parts += [self._cpu_plot(node), self._core_heatmap(node), self._memory_plot(node),
                      self._io_plot(node)]
            if self.data.system.has_gpu:
                parts.append(self._gpu_plot(node))
        return _section("utilization", "Resource utilization over time", lead, "".join(parts))

    def _line(self, fig: go.Figure, s: Series, name: str, scale: float = 1.0, unit: str = "",
              visible: bool | str = True, **kw: Any) -> None:
        if len(s) == 0:
            return
        x, y = downsample(self._x(s.t), s.v * scale)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=name, visible=visible,
                                 hovertemplate=f"%{{y:.2f}} {unit}<extra>{_e(name)}</extra>", **kw))

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
        return _plot(fig)

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
        return _plot(fig, max(220, 60 + 18 * len(cores)))

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
        return _plot(fig)

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
        return _plot(fig)

    def _gpu_plot(self, node: str) -> str:
        fig = go.Figure()
        for name, s in self.data.system.gpus(node).items():
            self._line(fig, s, f"{name} utilization", unit="%")
        for name, s in self.data.system.by_dimension(node, "GPUMemoryUtilization").items():
            self._line(fig, s, f"{name} memory", unit="%", line={"dash": "dot"})
        fig.update_layout(title="GPU utilization and memory (%)", xaxis_title=self._xtitle,
                          yaxis={"range": [0, 105]}, hovermode="x unified")
        return _plot(fig)

    # -- framework metrics

    def _framework(self) -> str:
        lead = ("Time measured inside the training process: each boosting round (Step, the TRAIN phase), the "
                "evaluation of the eval sets after it (EVAL), Debugger saves, and the phases the algorithm "
                "reports, such as data loading.")
        events = [e for e in self.data.framework if e.name != "TrainingLoop"]
        if not events:
            return _section("framework", "Framework metrics summary", lead,
                            _note("No framework metrics: profiling was disabled or no round has run yet.", True))
        totals: dict[str, float] = {}
        for e in events:
            totals[e.name] = totals.get(e.name, 0.0) + e.duration
        pie = go.Figure(go.Pie(labels=list(totals), values=list(totals.values()), hole=0.45, sort=True,
                               hovertemplate="%{label}: %{value:.2f} s (%{percent})<extra></extra>"))
        pie.update_layout(title="Where the training process spent its time")
        grand = sum(totals.values()) or 1.0
        phases = {e.name: e.phase for e in events}
        counts = {n: sum(1 for e in events if e.name == n) for n in totals}
        shares = _table(["Event", "Phase", "Count", "Total", "Share"],
                        [[n, phases[n], counts[n], fmt_seconds(t), f"{100 * t / grand:.1f}%"]
                         for n, t in sorted(totals.items(), key=lambda kv: -kv[1])], numeric=[2, 3, 4])
        body = f'<div class="grid2"><div><h3>Time by event</h3>{shares}</div><div>{_plot(pie, 380)}</div></div>'
        body += self._step_table() + self._step_plot() + self._step_histogram()
        return _section("framework", "Framework metrics summary", lead, body)

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
        return "<h3>Step durations</h3>" + _table(
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
        return _plot(fig)

    def _step_histogram(self) -> str:
        d = np.array([e.duration for e in self.data.events("Step")]) * 1e3
        if len(d) < 2:
            return ""
        counts, edges = np.histogram(d, bins=min(40, max(5, len(d) // 3)))
        fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges),
                               hovertemplate="%{x:.1f} ms: %{y} rounds<extra></extra>", marker_color=PALETTE[0]))
        fig.update_layout(title="Distribution of boosting-round durations", xaxis_title="ms",
                          yaxis_title="rounds", bargap=0.05)
        return _plot(fig, 300)

    # -- rules

    def _rules_summary(self) -> str:
        order = {ISSUES: 0, ERROR: 1, IN_PROGRESS: 2, NO_ISSUES: 3}
        rows = []
        for r in sorted(self.results, key=lambda r: (order.get(r.status, 4), r.rule)):
            params = "<br>".join(f"{_e(k)}: {_e(v)}" for k, v in r.parameters.items() if k != "scan_interval_us")
            finding = r.status_details.removeprefix("RuleEvaluationConditionMet: ")
            rows.append([Raw(f'<b>{_e(r.rule)}</b><div class="params">{_e(r.description)}</div>'),
                         Raw(_badge(r.status)), finding, r.triggered, r.violations, r.datapoints,
                         r.recommendation, Raw(f'<span class="params">{params}</span>')])
        lead = ("Every profiler rule: what it found, how often, and what to do about it. 'Triggered' counts the "
                "evaluations (one per scan interval of the timeline) in which the rule's condition was met; "
                "'Violations' counts the offending datapoints or steps; 'Datapoints' how many it looked at. "
                "Rules that analyse GPUs do not apply on instances without one.")
        table = _table(["Rule", "Status", "Finding", "Triggered", "Violations", "Datapoints", "Recommendation",
                        "Parameters"], rows, numeric=[3, 4, 5])
        return _section("rules", "Rules summary", lead, table)

    def _analysis(self) -> str:
        cards = []
        for r in sorted(self.results, key=lambda r: (r.status != ISSUES, r.rule)):
            notes = "".join(f"<p><i>{_e(n)}</i></p>" for n in r.notes if n not in r.status_details)
            cards.append(f'<div class="rule{" bad" if r.status == ISSUES else ""}"><h4>{_e(r.rule)} '
                         f"{_badge(r.status)}</h4><p>{_e(r.status_details or r.description)}</p>{notes}"
                         f"{self._rule_extra(r)}</div>")
        lead = "The finding of each rule in words, with the numbers behind it."
        return _section("analysis", "Rule analysis", lead, "".join(cards))

    def _rule_extra(self, r: RuleResult) -> str:
        if r.rule == "StepOutlier" and r.details:
            rows = [[k, st.get("outliers", 0), fmt_seconds(st.get("mean")), fmt_seconds(st.get("limit")),
                     ", ".join(map(str, st.get("outlier_steps", [])[:15]))] for k, st in r.details.items()]
            return _table(["Node / mode", "Outliers", "Mean", "Limit", "Outlier rounds"], rows, numeric=[1, 2, 3])
        if r.rule == "OverallFrameworkMetrics" and r.details.get("events"):
            rows = [[k, v["phase"], v["count"], fmt_seconds(v["total_seconds"]), f"{v['percent']:.1f}%"]
                    for k, v in sorted(r.details["events"].items(), key=lambda kv: -kv[1]["total_seconds"])]
            return _table(["Event", "Phase", "Count", "Total", "Share"], rows, numeric=[2, 3, 4])
        if r.rule == "MaxInitializationTime" and "initialization_seconds" in r.details:
            return f"<p>Initialization took {_e(fmt_seconds(r.details['initialization_seconds']))}.</p>"
        return ""


# ------------------------------------------------------------------ XGBoost report


def write_xgboost_report(path: Path, data: JobData, rule_results: Sequence[RuleResult] = ()) -> Path:
    """Write ``xgboost_report.html`` for the job."""
    return _write(path, XgboostReport(data, rule_results).render())


def task_of(objective: str, labels: np.ndarray | None) -> str:
    """binary, multiclass or regression (ranking and survival count as regression here)."""
    if objective.startswith("binary:"):
        return "binary"
    if objective.startswith("multi:"):
        return "multiclass"
    if objective or labels is None:
        return "regression"
    values = np.unique(labels)
    if len(values) <= 2 and np.isin(values, (0, 1)).all():
        return "binary"
    return "regression"


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(false positive rate, true positive rate, thresholds, AUC) of a binary classifier."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order] > 0.5
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    tpr = np.r_[0.0, tps / pos]
    fpr = np.r_[0.0, fps / neg]
    thresholds = np.r_[np.inf, s[distinct]]
    return fpr, tpr, thresholds, float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def classification_metrics(m: np.ndarray) -> dict[str, Any]:
    """Per-class precision/recall/F1/support and their micro, macro and weighted averages."""
    tp = np.diag(m).astype(float)
    predicted, actual = m.sum(axis=0).astype(float), m.sum(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    total = max(actual.sum(), 1.0)
    micro = tp.sum() / total
    weights = actual / total
    return {
        "classes": [{"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                    for p, r, f, s in zip(precision, recall, f1, actual, strict=True)],
        "micro": {"precision": micro, "recall": micro, "f1": micro},
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "weighted": {"precision": float(precision @ weights), "recall": float(recall @ weights),
                     "f1": float(f1 @ weights)},
        "accuracy": float(micro),
    }


class XgboostReport:
    def __init__(self, data: JobData, rule_results: Sequence[RuleResult]) -> None:
        self.data = data
        self.debug = data.debug
        self.rules = list(rule_results)
        self.labels = self.debug.labels
        self.task = task_of(self.debug.objective, self.labels)
        self.pred_steps = self.debug.steps("predictions")
        self.last_pred = self.debug.predictions(self.pred_steps[-1]) if self.pred_steps else None
        if self.last_pred is not None and self.labels is not None and len(self.last_pred) != len(self.labels):
            self.last_pred = None

    def _classes(self, pred: np.ndarray) -> np.ndarray | None:
        return predicted_classes(pred, self.debug.objective, self.labels)

    def render(self) -> str:
        sections = [("summary", "Summary", self._cards()),
                    ("hyperparameters", "Hyperparameters", self._hyperparameters()),
                    ("labels", "Distribution of true labels", self._label_distribution()),
                    ("loss", "Loss per round", self._loss()),
                    ("importance", "Feature importance", self._importance())]
        if self.task in ("binary", "multiclass"):
            sections += [("confusion", "Confusion matrix", self._confusion()),
                         ("confusion-eval", "Evaluation of the confusion matrix", self._confusion_eval()),
                         ("class-accuracy", "Accuracy of each class over rounds", self._class_accuracy())]
            if self.task == "binary":
                sections.append(("roc", "ROC curve", self._roc()))
        else:
            sections += [("residuals", "Distribution of residuals", self._residuals()),
                         ("error-bins", "Absolute validation error per label bin", self._error_bins())]
        if self.rules:
            sections.append(("rules", "Debugger rules", self._rules()))
        name = self.data.job_name or "training job"
        sub = f"Training job <b>{_e(name)}</b> · objective <b>{_e(self.debug.objective or 'unknown')}</b> · " \
              f"{_e(self.task)} task"
        return _page(f"XGBoost training report — {name}", sub, [(a, t) for a, t, _ in sections],
                     "".join(body for _, _, body in sections))

    # -- summary

    def _cards(self) -> str:
        cards = [_card("Task", self.task, self.debug.objective or "objective not recorded")]
        rounds = max(self.debug.index) + 1 if self.debug.index else 0
        cards.append(_card("Boosting rounds", str(rounds), "rounds seen by the Debugger hook"))
        for name, (steps, values) in list(self.debug.metrics.items())[:4]:
            cards.append(_card(name, fmt_value(float(values[-1])), f"at round {int(steps[-1])}"))
        if self.last_pred is not None and self.labels is not None:
            cards += self._quality_cards()
        issues = [r for r in self.rules if r.status == ISSUES]
        if self.rules:
            cards.append(_card("Rules with issues", f"{len(issues)} / {len(self.rules)}",
                               ", ".join(r.rule for r in issues) or "none", "bad" if issues else "ok"))
        if not self.debug.present:
            return '<div id="summary">' + _note(
                "No Debugger data was saved for this job: configure a DebugHookConfig with the metrics, "
                "feature_importance, predictions and labels collections.", True) + "</div>"
        return f'<div id="summary" class="cards">{"".join(cards)}</div>'

    def _quality_cards(self) -> list[str]:
        assert self.last_pred is not None and self.labels is not None
        where = f"{self.debug.meta.get('predictions_dataset', 'validation')} set, round {self.pred_steps[-1]}"
        if self.task == "regression":
            err = self.last_pred - self.labels
            rmse = float(np.sqrt(np.mean(err**2)))
            var = float(np.var(self.labels))
            r2 = 1 - float(np.mean(err**2)) / var if var > 0 else float("nan")
            return [_card("RMSE", fmt_value(rmse), where), _card("R²", fmt_value(r2), where)]
        classes = self._classes(self.last_pred)
        out = []
        if classes is not None:
            out.append(_card("Accuracy", f"{np.mean(classes == self.labels.astype(np.int64)):.1%}", where))
        if self.task == "binary" and self.last_pred.ndim == 1:
            out.append(_card("AUC", f"{roc_curve(self.labels, self.last_pred)[3]:.4f}", where))
        return out

    def _missing(self, anchor: str, title: str, lead: str, collections: str) -> str:
        return _section(anchor, title, lead, _note(f"Not available: the {collections} collection(s) were not "
                                                   "saved. Add them to the DebugHookConfig "
                                                   "CollectionConfigurations.", True))

    # -- sections

    def _hyperparameters(self) -> str:
        hp = self.debug.hyperparameters
        lead = "The hyperparameters the job trained with, as passed to the algorithm."
        if not hp:
            return self._missing("hyperparameters", "Hyperparameters", lead, "hyperparameters")
        return _section("hyperparameters", "Hyperparameters", lead,
                        _table(["Hyperparameter", "Value"], sorted(hp.items())))

    def _label_distribution(self) -> str:
        lead = (f"How the true labels of the {self.debug.meta.get('predictions_dataset', 'validation')} set "
                "are distributed. Very uneven classes call for class weights (scale_pos_weight) or resampling.")
        if self.labels is None:
            return self._missing("labels", "Distribution of true labels", lead, "labels")
        fig = go.Figure()
        if self.task == "regression":
            counts, edges = np.histogram(self.labels, bins=40)
            fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges),
                                 hovertemplate="%{x:.4g}: %{y} samples<extra></extra>"))
            fig.update_layout(xaxis_title="label", bargap=0.05)
        else:
            values, counts = np.unique(self.labels.astype(np.int64), return_counts=True)
            fig.add_trace(go.Bar(x=[str(v) for v in values], y=counts, text=counts, textposition="outside",
                                 marker_color=[PALETTE[i % len(PALETTE)] for i in range(len(values))],
                                 hovertemplate="class %{x}: %{y} samples<extra></extra>"))
            fig.update_layout(xaxis_title="class", xaxis_type="category")
        fig.update_layout(title="True labels", yaxis_title="samples")
        return _section("labels", "Distribution of true labels", lead, _plot(fig, 340))

    def _loss(self) -> str:
        lead = ("Each evaluation metric per boosting round on the training and validation sets. A validation "
                "curve that flattens or rises while the training curve keeps falling is overfitting.")
        metrics = self.debug.metrics
        if not metrics:
            return self._missing("loss", "Loss per round", lead, "metrics")
        names = sorted({n.split("-", 1)[-1] for n in metrics})
        fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, subplot_titles=names,
                            vertical_spacing=0.08 if len(names) > 1 else 0.1)
        for row, metric in enumerate(names, start=1):
            for i, (tensor, (steps, values)) in enumerate(sorted(
                    (k, v) for k, v in metrics.items() if k.split("-", 1)[-1] == metric)):
                fig.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers", name=tensor,
                                         marker={"size": 5}, line={"color": PALETTE[i % len(PALETTE)]},
                                         hovertemplate="round %{x}: %{y:.5f}<extra>" + tensor + "</extra>"),
                              row=row, col=1)
        fig.update_layout(title="Metrics per boosting round", hovermode="x unified")
        fig.update_xaxes(title_text="Boosting round", row=len(names), col=1)
        return _section("loss", "Loss per round", lead, _plot(fig, 300 + 220 * (len(names) - 1)))

    def _importance(self) -> str:
        lead = ("How much each feature contributes to the model at the last saved round, normalised to sum to "
                "1. weight: how often a feature is used to split; gain: the average loss reduction of its "
                "splits; cover: the average number of samples its splits affect (total_* are sums). Use the "
                "buttons to switch.")
        steps = self.debug.steps("feature_importance")
        if not steps:
            return self._missing("importance", "Feature importance", lead, "feature_importance")
        types = self.debug.feature_importance(steps[-1])
        if not types:
            return _section("importance", "Feature importance", lead, _note("No importance recorded (the "
                                                                          "booster has no trees yet?)."))
        fig = go.Figure()
        kinds = list(types)
        for i, kind in enumerate(kinds):
            top = sorted(types[kind].items(), key=lambda kv: -kv[1])[:25][::-1]
            fig.add_trace(go.Bar(x=[v for _, v in top], y=[f for f, _ in top], orientation="h", name=kind,
                                 visible=i == 0, marker_color=PALETTE[i % len(PALETTE)],
                                 hovertemplate="%{y}: %{x:.3f}<extra>" + kind + "</extra>"))
        buttons = [{"label": k, "method": "update",
                    "args": [{"visible": [j == i for j in range(len(kinds))]},
                             {"title": {"text": f"Feature importance ({k}) at round {steps[-1]}"}}]}
                   for i, k in enumerate(kinds)]
        n = max(len(types[k]) for k in kinds)
        fig.update_layout(title=f"Feature importance ({kinds[0]}) at round {steps[-1]}", xaxis_title="share",
                          updatemenus=[{"buttons": buttons, "direction": "right", "type": "buttons", "x": 0,
                                        "y": 1.0, "xanchor": "left", "yanchor": "bottom", "showactive": True,
                                        "pad": {"b": 6}}],
                          margin={"l": 60, "r": 24, "t": 96, "b": 48})
        body = _plot(fig, max(320, 110 + 22 * min(n, 25)))
        if len(steps) > 1 and "weight" in types:
            body += self._importance_over_time(steps, types)
        return _section("importance", "Feature importance", lead, body)

    def _importance_over_time(self, steps: list[int], last: dict[str, dict[str, float]]) -> str:
        kind = "gain" if "gain" in last else "weight"
        top = [f for f, _ in sorted(last[kind].items(), key=lambda kv: -kv[1])[:8]]
        series = {f: [] for f in top}
        for s in steps:
            scores = self.debug.feature_importance(s).get(kind, {})
            for f in top:
                series[f].append(scores.get(f, 0.0))
        fig = go.Figure([go.Scatter(x=steps, y=v, mode="lines+markers", name=f, marker={"size": 4},
                                    hovertemplate="round %{x}: %{y:.3f}<extra>" + f + "</extra>")
                         for f, v in series.items()])
        fig.update_layout(title=f"Importance ({kind}) of the top features over rounds", xaxis_title="Boosting round",
                          yaxis_title="share", hovermode="x unified")
        return _plot(fig, 340)

    def _matrix(self) -> tuple[np.ndarray, int] | None:
        if self.last_pred is None or self.labels is None:
            return None
        classes = self._classes(self.last_pred)
        if classes is None:
            return None
        labels = self.labels.astype(np.int64)
        n = int(max(labels.max(initial=0), classes.max(initial=0)) + 1)
        return confusion_matrix(labels, classes, max(n, 2)), self.pred_steps[-1]

    def _confusion(self) -> str:
        lead = ("Rows are the true classes, columns the predicted classes, at the last saved round; the "
                "diagonal holds the correct predictions. Percentages are of each true class (row).")
        got = self._matrix()
        if got is None:
            return self._missing("confusion", "Confusion matrix", lead, "predictions and labels")
        m, step = got
        rows = m.sum(axis=1, keepdims=True)
        pct = np.where(rows > 0, m / np.maximum(rows, 1), 0.0)
        names = [str(i) for i in range(len(m))]
        text = [[f"{m[i][j]}<br>{pct[i][j]:.1%}" for j in range(len(m))] for i in range(len(m))]
        fig = go.Figure(go.Heatmap(z=pct, x=names, y=names, text=text, texttemplate="%{text}", colorscale="Blues",
                                   zmin=0, zmax=1, colorbar={"title": "share of row"},
                                   hovertemplate="true %{y}, predicted %{x}<br>%{text}<extra></extra>"))
        fig.update_layout(title=f"Confusion matrix at round {step}", xaxis_title="predicted class",
                          yaxis_title="true class", xaxis_type="category", yaxis_type="category",
                          yaxis_autorange="reversed")
        size = min(640, 260 + 50 * len(m))
        return _section("confusion", "Confusion matrix", lead, _plot(fig, size))

    def _confusion_eval(self) -> str:
        lead = ("Precision: of the samples predicted as a class, the share that truly are. Recall: of the "
                "samples of a class, the share found. F1: their harmonic mean. Micro averages count every "
                "sample once, macro averages every class once, weighted averages weigh classes by support.")
        got = self._matrix()
        if got is None:
            return self._missing("confusion-eval", "Evaluation of the confusion matrix", lead,
                                 "predictions and labels")
        cm = classification_metrics(got[0])
        rows = [[f"class {i}", f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", c["support"]]
                for i, c in enumerate(cm["classes"])]
        total = sum(c["support"] for c in cm["classes"])
        rows += [[Raw(f"<b>{k} average</b>"), f"{cm[k]['precision']:.4f}", f"{cm[k]['recall']:.4f}",
                  f"{cm[k]['f1']:.4f}", total] for k in ("micro", "macro", "weighted")]
        body = _table(["", "Precision", "Recall", "F1", "Support"], rows, numeric=[1, 2, 3, 4])
        body += f"<p>Accuracy: <b>{cm['accuracy']:.2%}</b> at round {got[1]}.</p>"
        return _section("confusion-eval", "Evaluation of the confusion matrix", lead, body)

    def _class_accuracy(self) -> str:
        lead = "The share of each class predicted correctly (the confusion matrix's diagonal, i.e. recall) at " \
               "every saved round."
        if self.labels is None or not self.pred_steps:
            return self._missing("class-accuracy", "Accuracy of each class over rounds", lead,
                                 "predictions and labels")
        labels = self.labels.astype(np.int64)
        values = np.unique(labels)
        curves: dict[int, list[float]] = {int(v): [] for v in values}
        steps = self.pred_steps[-60:]  # the last 60 saved rounds are plenty for a trend
        for s in steps:
            pred = self.debug.predictions(s)
            classes = None if pred is None or len(pred) != len(labels) else self._classes(pred)
            for v in values:
                mask = labels == v
                curves[int(v)].append(float(np.mean(classes[mask] == v)) if classes is not None else float("nan"))
        fig = go.Figure([go.Scatter(x=steps, y=c, mode="lines+markers", name=f"class {v}", marker={"size": 5},
                                    hovertemplate="round %{x}: %{y:.1%}<extra>class " + str(v) + "</extra>")
                         for v, c in curves.items()])
        fig.update_layout(title="Correctly predicted share per class", xaxis_title="Boosting round",
                          yaxis={"title": "share", "tickformat": ".0%", "range": [0, 1.02]}, hovermode="x unified")
        return _section("class-accuracy", "Accuracy of each class over rounds", lead, _plot(fig, 340))

    def _roc(self) -> str:
        lead = ("The receiver operating characteristic: true-positive rate against false-positive rate for "
                "every decision threshold. The area under the curve (AUC) is 0.5 for random guessing and 1 "
                "for a perfect ranking. Hover shows the threshold.")
        if self.last_pred is None or self.labels is None or self.last_pred.ndim != 1:
            return self._missing("roc", "ROC curve", lead, "predictions and labels")
        fpr, tpr, thr, auc = roc_curve(self.labels, self.last_pred)
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 800)).astype(np.int64))
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=fpr[keep], y=tpr[keep], customdata=thr[keep], mode="lines",
                                 name=f"model (AUC {auc:.4f})", fill="tozeroy", fillcolor="rgba(37,99,235,.12)",
                                 hovertemplate="FPR %{x:.3f}, TPR %{y:.3f}<br>threshold %{customdata:.4f}"
                                               "<extra></extra>"))
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="random", line={"dash": "dash",
                                                                                          "color": "#94a3b8"}))
        fig.update_layout(title=f"ROC curve at round {self.pred_steps[-1]} — AUC {auc:.4f}",
                          xaxis={"title": "false positive rate", "range": [0, 1]},
                          yaxis={"title": "true positive rate", "range": [0, 1.02]})
        return _section("roc", "ROC curve", lead, _plot(fig, 440))

    def _residuals(self) -> str:
        lead = ("Prediction minus true value on the validation set at the last saved round. A narrow, "
                "centred distribution is good; a shifted centre means bias, long tails mean large errors.")
        if self.last_pred is None or self.labels is None or self.last_pred.ndim != 1:
            return self._missing("residuals", "Distribution of residuals", lead, "predictions and labels")
        res = self.last_pred - self.labels
        counts, edges = np.histogram(res, bins=50)
        hist = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges),
                                marker_color=PALETTE[0], hovertemplate="%{x:.4g}: %{y} samples<extra></extra>"))
        hist.update_layout(title=f"Residuals at round {self.pred_steps[-1]}<br><sup>mean {res.mean():.4g} · "
                                 f"std {res.std():.4g}</sup>", xaxis_title="prediction − label",
                           yaxis_title="samples", bargap=0.05, margin={"l": 60, "r": 24, "t": 64, "b": 48})
        idx = np.unique(np.linspace(0, len(res) - 1, min(len(res), 3000)).astype(np.int64))
        lo, hi = float(self.labels.min()), float(self.labels.max())
        scatter = go.Figure([
            go.Scatter(x=self.labels[idx], y=self.last_pred[idx], mode="markers", name="samples",
                       marker={"size": 4, "opacity": 0.5},
                       hovertemplate="label %{x:.4g}<br>prediction %{y:.4g}<extra></extra>"),
            go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="perfect", line={"dash": "dash",
                                                                                    "color": "#94a3b8"})])
        scatter.update_layout(title="Predicted against true values", xaxis_title="label",
                              yaxis_title="prediction")
        return _section("residuals", "Distribution of residuals", lead,
                        f'<div class="grid2"><div>{_plot(hist, 380)}</div><div>{_plot(scatter, 380)}</div></div>')

    def _error_bins(self) -> str:
        lead = ("The validation labels are split into 10 bins of equal size (by value); each line is the mean "
                "absolute error of one bin over the saved rounds. Bins whose error stays high are the value "
                "ranges the model handles worst.")
        if self.labels is None or not self.pred_steps:
            return self._missing("error-bins", "Absolute validation error per label bin", lead,
                                 "predictions and labels")
        edges = np.unique(np.quantile(self.labels, np.linspace(0, 1, 11)))
        bins = np.clip(np.searchsorted(edges, self.labels, side="right") - 1, 0, max(len(edges) - 2, 0))
        steps = self.pred_steps[-60:]
        curves: dict[int, list[float]] = {b: [] for b in range(max(len(edges) - 1, 1))}
        for s in steps:
            pred = self.debug.predictions(s)
            ok = pred is not None and pred.ndim == 1 and len(pred) == len(self.labels)
            for b in curves:
                mask = bins == b
                curves[b].append(float(np.mean(np.abs(pred[mask] - self.labels[mask])))
                                 if ok and mask.any() else float("nan"))
        fig = go.Figure()
        for b, c in curves.items():
            label = f"[{edges[b]:.3g}, {edges[min(b + 1, len(edges) - 1)]:.3g}]"
            fig.add_trace(go.Scatter(x=steps, y=c, mode="lines+markers", name=label, marker={"size": 4},
                                     hovertemplate="round %{x}: %{y:.4g}<extra>" + label + "</extra>"))
        fig.update_layout(title="Mean absolute error per label bin", xaxis_title="Boosting round",
                          yaxis={"title": "mean |prediction − label|", "rangemode": "tozero"}, hovermode="x unified")
        return _section("error-bins", "Absolute validation error per label bin", lead, _plot(fig, 400))

    def _rules(self) -> str:
        rows = [[Raw(f"<b>{_e(r.rule)}</b>"), Raw(_badge(r.status)), r.status_details, r.recommendation]
                for r in sorted(self.rules, key=lambda r: (r.status != ISSUES, r.rule))]
        lead = "The other Debugger rules configured for this job and what they found."
        return _section("rules", "Debugger rules", lead,
                        _table(["Rule", "Status", "Finding", "Recommendation"], rows))
