"""Evaluation reports: JSON figures, a Markdown table beside the handbook's published rows, and plots.

Plots are drawn on a bare ``matplotlib.figure.Figure`` (Agg canvas), so reporting never touches pyplot's
global state nor needs a display.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from models.evaluate import FoldResult, summarize

__all__ = ["PUBLISHED", "SCENARIOS", "markdown_table", "plot_curves", "plot_scenario_recall", "scenario_recall", "write_report"]

logger = logging.getLogger(__name__)

PUBLISHED: tuple[tuple[str, str, str, str], ...] = (
    ("logistic regression, baseline split", "0.871", "0.606", "0.291"),
    ("random forest, baseline split", "0.867", "0.658", "0.287"),
    ("decision tree, prequential", "0.797±0.01", "0.579±0.01", "0.284±0.00"),
    ("logistic regression, prequential", "0.868±0.02", "0.623±0.02", "0.297±0.01"),
    ("random forest, prequential", "0.870±0.02", "0.678±0.01", "0.299±0.01"),
    ("XGBoost, prequential", "0.869±0.01", "0.687±0.01", "0.303±0.01"),
    ("feed-forward net, prequential", "0.876±0.01", "0.675±0.01", "0.303±0.02"),
    ("CNN over last 5 tx, prequential", "0.872±0.01", "0.599±0.01", "0.288±0.01"),
    ("LSTM over last 5 tx, prequential", "0.876±0.02", "0.665±0.02", "0.297±0.01"),
    ("LSTM + attention, prequential", "0.874±0.02", "0.667±0.01", "0.295±0.01"),
    ("balanced bagging (imbalanced-learning chapter)", "0.879", "0.680", "0.305"),
)
"""The handbook's published test-fold results (model, AUC ROC, AP, CP@100), as the benchmark quotes them."""

SCENARIOS = {1: "amount > 220", 2: "compromised terminal", 3: "compromised card"}
"""The simulator's fraud scenarios (ground truth, used only to break recall down)."""

_METRICS = (("auc", "AUC ROC"), ("ap", "AP"), ("cp_at_100", "CP@100"))


def markdown_table(summary: dict, name: str) -> str:
    """The published rows and one row for ``summary`` (mean ± std when there are several folds).

    >>> summary = {"folds": [{}], "mean": {"auc": 0.9, "ap": 0.7, "cp_at_100": 0.3}, "std": {}}
    >>> markdown_table(summary, "ours").splitlines()[-1]
    '| **ours** | 0.900 | 0.700 | 0.300 |'
    """
    def cell(metric: str) -> str:
        mean = f"{summary['mean'][metric]:.3f}"
        return f"{mean}±{summary['std'][metric]:.2f}" if len(summary["folds"]) > 1 else mean

    lines = ["| model | AUC ROC | AP | CP@100 |", "|---|---|---|---|"]
    lines += [f"| {model} (handbook) | {auc} | {ap} | {cp} |" for model, auc, ap, cp in PUBLISHED]
    lines.append(f"| **{name}** | " + " | ".join(cell(metric) for metric, _ in _METRICS) + " |")
    return "\n".join(lines)


def scenario_recall(results: Sequence[FoldResult], frame: pd.DataFrame) -> dict[str, float]:
    """Share of each scenario's test frauds scored at or above the fold model's threshold, pooled over folds."""
    if "scenario" not in frame.columns:
        return {}
    scenario = np.concatenate([frame["scenario"].to_numpy()[result.fold.test] for result in results])
    alerted = np.concatenate([result.artifact.alerts(result.logits) for result in results])
    recall = {}
    for code, label in SCENARIOS.items():
        frauds = scenario == code
        if frauds.any():
            recall[label] = float(alerted[frauds].mean())
    frauds = scenario > 0
    if frauds.any():
        recall["all frauds"] = float(alerted[frauds].mean())
    return recall


def plot_curves(results: Sequence[FoldResult], labels: np.ndarray, path: str | Path) -> Path:
    """ROC and precision-recall curves, one line per fold, in one PNG."""
    figure = Figure(figsize=(11, 4.5))
    roc, pr = figure.subplots(1, 2)
    for result in results:
        y = labels[result.fold.test]
        fpr, tpr, _ = roc_curve(y, result.scores)
        precision, recall, _ = precision_recall_curve(y, result.scores)
        name = f"{result.fold.train_start} (AUC {result.metrics['auc']:.3f}, AP {result.metrics['ap']:.3f})"
        roc.plot(fpr, tpr, label=name)
        pr.step(recall, precision, where="post", label=name)
    roc.plot([0, 1], [0, 1], linestyle=":", color="grey")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test weeks)")
    pr.set(xlabel="recall", ylabel="precision", title="Precision-recall (test weeks)", ylim=(0, 1.02))
    for axes in (roc, pr):
        axes.legend(fontsize=7, title="training week", title_fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return Path(path)


def plot_scenario_recall(recall: dict[str, float], path: str | Path) -> Path:
    """A bar per fraud scenario: the share of its frauds alerted at the models' thresholds."""
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    bars = axes.bar(list(recall), list(recall.values()), color="#4c72b0")
    axes.bar_label(bars, fmt="%.2f")
    axes.set(ylim=(0, 1.05), ylabel="recall at threshold", title="Frauds alerted, per scenario (test weeks)")
    axes.tick_params(axis="x", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return Path(path)


def write_report(
    results: Sequence[FoldResult], frame: pd.DataFrame, out_dir: str | Path, *, name: str = "riskstream behaviour model"
) -> dict:
    """Write ``evaluation.json``, ``evaluation.md``, ``curves.png`` and ``scenario_recall.png``; return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = frame["label"].to_numpy()
    summary = summarize(results, labels)
    summary["scenario_recall"] = scenario_recall(results, frame)
    (out / "evaluation.json").write_text(json.dumps(summary, indent=2))
    table = markdown_table(summary, name)
    recall = "".join(f"| {scenario} | {value:.3f} |\n" for scenario, value in summary["scenario_recall"].items())
    text = f"# Detection quality\n\n{table}\n"
    if recall:
        text += f"\n## Recall at the alert threshold, per fraud scenario\n\n| scenario | recall |\n|---|---|\n{recall}"
    (out / "evaluation.md").write_text(text)
    plot_curves(results, labels, out / "curves.png")
    if summary["scenario_recall"]:
        plot_scenario_recall(summary["scenario_recall"], out / "scenario_recall.png")
    logger.info("wrote the evaluation report to %s", out)
    return summary
