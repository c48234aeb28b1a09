"""The XGBoost training report (``xgboost_report.html``): labels, loss per round, feature importance,
confusion matrix and ROC (classification) or residuals (regression), and the Debugger rules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sagestack.debugger.data import JobData
from sagestack.debugger.reports.layout import (
    PALETTE,
    Raw,
    card,
    esc,
    fmt_value,
    note,
    page,
    plot,
    rule_badge,
    section,
    table,
    write_atomically,
)
from sagestack.debugger.rules.engine import ISSUES, RuleResult
from sagestack.debugger.rules.training import confusion_matrix, predicted_classes


def write_xgboost_report(path: Path, data: JobData, rule_results: Sequence[RuleResult] = ()) -> Path:
    """Write ``xgboost_report.html`` for the job."""
    return write_atomically(path, XgboostReport(data, rule_results).render())


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
        sub = f"Training job <b>{esc(name)}</b> · objective <b>{esc(self.debug.objective or 'unknown')}</b> · " \
              f"{esc(self.task)} task"
        return page(f"XGBoost training report — {name}", sub, [(a, t) for a, t, _ in sections],
                    "".join(body for _, _, body in sections))

    # -- summary

    def _cards(self) -> str:
        cards = [card("Task", self.task, self.debug.objective or "objective not recorded")]
        rounds = max(self.debug.index) + 1 if self.debug.index else 0
        cards.append(card("Boosting rounds", str(rounds), "rounds seen by the Debugger hook"))
        for name, (steps, values) in list(self.debug.metrics.items())[:4]:
            cards.append(card(name, fmt_value(float(values[-1])), f"at round {int(steps[-1])}"))
        if self.last_pred is not None and self.labels is not None:
            cards += self._quality_cards()
        issues = [r for r in self.rules if r.status == ISSUES]
        if self.rules:
            cards.append(card("Rules with issues", f"{len(issues)} / {len(self.rules)}",
                              ", ".join(r.rule for r in issues) or "none", "bad" if issues else "ok"))
        if not self.debug.present:
            return '<div id="summary">' + note(
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
            return [card("RMSE", fmt_value(rmse), where), card("R²", fmt_value(r2), where)]
        classes = self._classes(self.last_pred)
        out = []
        if classes is not None:
            out.append(card("Accuracy", f"{np.mean(classes == self.labels.astype(np.int64)):.1%}", where))
        if self.task == "binary" and self.last_pred.ndim == 1:
            out.append(card("AUC", f"{roc_curve(self.labels, self.last_pred)[3]:.4f}", where))
        return out

    def _missing(self, anchor: str, title: str, lead: str, collections: str) -> str:
        return section(anchor, title, lead, note(f"Not available: the {collections} collection(s) were not "
                                                   "saved. Add them to the DebugHookConfig "
                                                   "CollectionConfigurations.", True))

    # -- sections

    def _hyperparameters(self) -> str:
        hp = self.debug.hyperparameters
        lead = "The hyperparameters the job trained with, as passed to the algorithm."
        if not hp:
            return self._missing("hyperparameters", "Hyperparameters", lead, "hyperparameters")
        return section("hyperparameters", "Hyperparameters", lead,
                       table(["Hyperparameter", "Value"], sorted(hp.items())))

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
        return section("labels", "Distribution of true labels", lead, plot(fig, 340))

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
        return section("loss", "Loss per round", lead, plot(fig, 300 + 220 * (len(names) - 1)))

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
            return section("importance", "Feature importance", lead, note("No importance recorded (the "
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
        body = plot(fig, max(320, 110 + 22 * min(n, 25)))
        if len(steps) > 1 and "weight" in types:
            body += self._importance_over_time(steps, types)
        return section("importance", "Feature importance", lead, body)

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
        return plot(fig, 340)

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
        return section("confusion", "Confusion matrix", lead, plot(fig, size))

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
        body = table(["", "Precision", "Recall", "F1", "Support"], rows, numeric=[1, 2, 3, 4])
        body += f"<p>Accuracy: <b>{cm['accuracy']:.2%}</b> at round {got[1]}.</p>"
        return section("confusion-eval", "Evaluation of the confusion matrix", lead, body)

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
        return section("class-accuracy", "Accuracy of each class over rounds", lead, plot(fig, 340))

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
        return section("roc", "ROC curve", lead, plot(fig, 440))

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
        return section("residuals", "Distribution of residuals", lead,
                       f'<div class="grid2"><div>{plot(hist, 380)}</div><div>{plot(scatter, 380)}</div></div>')

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
        return section("error-bins", "Absolute validation error per label bin", lead, plot(fig, 400))

    def _rules(self) -> str:
        rows = [[Raw(f"<b>{esc(r.rule)}</b>"), Raw(rule_badge(r)), r.status_details, r.recommendation]
                for r in sorted(self.rules, key=lambda r: (r.status != ISSUES, r.rule))]
        lead = "The other Debugger rules configured for this job and what they found."
        return section("rules", "Debugger rules", lead,
                       table(["Rule", "Status", "Finding", "Recommendation"], rows))
