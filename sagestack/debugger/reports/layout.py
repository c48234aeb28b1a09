"""What both HTML reports are made of: the page, its stylesheet, sections, cards, tables, badges, plots.

Each report is one self-contained HTML file: plotly.js is inlined once in the
page head (no CDN, no network), every chart is an interactive plotly figure
(zoom, pan, hover), and the page explains itself for readers who never saw
the API. Long time series are averaged down to at most ``MAX_POINTS`` points
per line so reports of long jobs stay small and fast. The stylesheet is the
packaged file ``report.css`` beside this module.
"""

from __future__ import annotations

import functools
import html
import math
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from sagestack.debugger.rules.engine import ERROR, IN_PROGRESS, ISSUES, NO_ISSUES, RuleResult

MAX_POINTS = 1500
HEATMAP_COLUMNS = 400
PALETTE = ["#2563eb", "#f97316", "#10b981", "#e11d48", "#8b5cf6", "#0891b2", "#ca8a04", "#64748b"]
CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}
#: The badge of a rule that can never fire here (a GPU rule without a GPU), whatever its API status says.
NOT_APPLICABLE = "Not applicable"


@functools.cache
def css() -> str:
    return resources.files(__package__).joinpath("report.css").read_text(encoding="utf-8")


# ------------------------------------------------------------------ formatting helpers


def esc(value: Any) -> str:
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


def badge(status: str) -> str:
    tone = {NO_ISSUES: "ok", ISSUES: "bad", ERROR: "warn", IN_PROGRESS: "info"}.get(status, "info")
    label = {NO_ISSUES: "No issues", ISSUES: "Issues found", ERROR: "Error", IN_PROGRESS: "In progress"}
    return f'<span class="badge {tone}">{esc(label.get(status, status))}</span>'


def rule_badge(result: RuleResult) -> str:
    """The status badge of a rule: its API status, or "Not applicable" for a rule that cannot fire here."""
    if not result.applicable and result.status != ISSUES:
        return f'<span class="badge na">{NOT_APPLICABLE}</span>'
    return badge(result.status)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped unless wrapped in :class:`Raw`."""
    def cell(tag: str, i: int, value: Any) -> str:
        cls = ' class="num"' if i in numeric else ""
        body = value.html if isinstance(value, Raw) else esc(value)
        return f"<{tag}{cls}>{body}</{tag}>"
    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Raw:
    """Trusted HTML for :func:`table` cells."""

    def __init__(self, html_text: str) -> None:
        self.html = html_text


def card(label: str, value: str, hint: str = "", tone: str = "") -> str:
    return (f'<div class="card {tone}"><div class="label">{esc(label)}</div><div class="value">{esc(value)}</div>'
            f'<div class="hint">{esc(hint)}</div></div>')


def note(text: str, warn: bool = False) -> str:
    return f'<div class="note{" warn" if warn else ""}">{esc(text)}</div>'


def section(anchor: str, title: str, lead: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2><p class="lead">{esc(lead)}</p>{body}</section>'


def plot(fig: go.Figure, height: int = 380) -> str:
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


def page(title: str, subtitle: str, toc: list[tuple[str, str]], body: str) -> str:
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in toc)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{css()}</style>"
        # plotly.js inlined once: the report must open without network access.
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f'<header class="hero"><div class="wrap"><div class="eyebrow">sagestack · SageMaker Debugger</div>'
        f"<h1>{esc(title)}</h1><p class=\"sub\">{subtitle}</p></div></header>"
        f'<nav class="toc">{nav}</nav><main class="wrap">{body}</main>'
        # Charts are drawn while the page is still parsed; size them again once the layout is final.
        "<script>window.addEventListener('load',function(){document.querySelectorAll('.js-plotly-plot')"
        ".forEach(function(p){Plotly.Plots.resize(p);});});</script>"
        f'<footer>Generated by sagestack on {esc(fmt_time(time.time()))}. Charts: drag to zoom, double-click to '
        "reset, hover for values.</footer></body></html>\n"
    )


def write_atomically(path: Path, text: str) -> Path:
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

