"""Analysts' reports from the audit store: one alert's full explanation, and a model's global summary.

Both read only the store's exported segments (``audit.connect``: an in-memory DuckDB over Parquet), so they
run beside the live writer and never change the store. Plots are shap's own (waterfall, beeswarm, bar),
drawn with matplotlib's Agg backend and written as PNG files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from audit import connect
from explain.exceptions import ExplainError

DEFAULT_DAYS = 30
"""Days of decisions a global summary covers, counted back from the model's latest decision."""


@dataclass(frozen=True)
class AlertReport:
    """One decision as the audit store keeps it, with all its reasons (largest |contribution| first)."""

    decision: dict
    reasons: pd.DataFrame

    @property
    def probability(self) -> float:
        return float(self.decision["score"])

    def text(self) -> str:
        """The explanation as an analyst reads it: the score, how it adds up, then every reason."""
        d = self.decision
        flagged = "  FLAGGED: the reasons cannot be trusted" if d["explanation_flagged"] else ""
        threshold = f"threshold {d['threshold']:.4f}"
        if d.get("threshold_logit") is not None:  # stored since thresholds are logits
            threshold += f", logit {d['threshold_logit']:.2f}"
        lines = [
            f"transaction {d['tx_id']}  card {d['card_id']}  terminal {d['terminal_id']}  amount {d['amount']:.2f}",
            f"model {d['model_version']}  event time {d['event_time']:%Y-%m-%d %H:%M:%S}  "
            f"decided {d['decided_at']:%Y-%m-%d %H:%M:%S}",
            f"score {self.probability:.4f} (probability; {threshold}; alert: {d['is_alert']})",
        ]
        if d["base_value"] is None or self.reasons.empty:
            lines.append("no reasons stored: explaining failed or the transaction was not an alert" + flagged)
            return "\n".join(lines)
        total = float(self.reasons["contribution"].sum())
        lines.append(
            f"in log-odds: base value {d['base_value']:+.4f} + reasons {total:+.4f} = {d['base_value'] + total:+.4f}; "
            f"model logit {d['score_logit']:+.4f}; gap {d['additivity_gap']:.2g}{flagged}"
        )
        lines.append(f"{'rank':>4}  {'contribution':>12}  {'value':>12}  reason")
        for row in self.reasons.itertuples():
            value = "" if pd.isna(row.value) else f"{row.value:.4g}"
            lines.append(f"{row.rank:>4}  {row.contribution:>+12.4f}  {value:>12}  {row.label}  [{row.feature}]")
        return "\n".join(lines)


def alert_report(audit_dir: str | Path, tx_id: str) -> AlertReport:
    """The stored decision and reasons of one transaction; ``ExplainError`` when the store has none."""
    with connect(audit_dir) as con:
        decisions = con.execute("SELECT * EXCLUDE (seq) FROM decisions WHERE tx_id = ?", [tx_id]).df()
        reasons = con.execute(
            "SELECT rank, feature, label, value, contribution FROM reasons WHERE tx_id = ? ORDER BY rank", [tx_id]
        ).df()
    if decisions.empty:
        raise ExplainError(f"no decision for transaction {tx_id!r} in the audit store (or not exported yet)")
    decision = {key: (None if _missing(value) else value) for key, value in decisions.iloc[0].to_dict().items()}
    decision["explanation_flagged"] = bool(decision.get("explanation_flagged") or False)
    return AlertReport(decision, reasons)


def plot_waterfall(report: AlertReport, path: str | Path, max_display: int = 12) -> Path:
    """shap's waterfall of one alert: from the base value, each reason's push, to the model's logit."""
    if report.decision["base_value"] is None or report.reasons.empty:
        raise ExplainError(f"transaction {report.decision['tx_id']!r} has no stored reasons to plot")
    import shap

    explanation = shap.Explanation(
        values=report.reasons["contribution"].to_numpy(dtype=np.float64),
        base_values=float(report.decision["base_value"]),
        feature_names=report.reasons["label"].fillna(report.reasons["feature"]).tolist(),
    )
    return _save(lambda: shap.plots.waterfall(explanation, max_display=max_display, show=False), path,
                 f"transaction {report.decision['tx_id']}: log-odds, score {report.probability:.3f}")


@dataclass(frozen=True)
class ModelSummary:
    """The explained alerts of one model version: contributions and raw values, one row per alert."""

    version: str
    since: datetime | None
    until: datetime | None
    values: pd.DataFrame
    data: pd.DataFrame

    def mean_abs(self) -> pd.Series:
        """Mean |SHAP| per reason over the alerts, largest first: what drives this model's alerts."""
        return self.values.abs().mean().sort_values(ascending=False)

    def text(self) -> str:
        window = f"{self.since:%Y-%m-%d %H:%M} to {self.until:%Y-%m-%d %H:%M}" if self.since else "no decisions"
        lines = [f"model {self.version}: {len(self.values)} explained alert(s), decided {window}",
                 f"{'mean |SHAP|':>12}  {'leads':>6}  reason (log-odds)"]
        leads = self.values.abs().idxmax(axis=1).value_counts() if len(self.values) else pd.Series(dtype=int)
        for reason, size in self.mean_abs().items():
            lines.append(f"{size:>12.4f}  {int(leads.get(reason, 0)):>6}  {reason}")
        return "\n".join(lines)


def model_summary(audit_dir: str | Path, version: str, days: float = DEFAULT_DAYS) -> ModelSummary:
    """The alerts of ``version`` decided in the ``days`` before its latest decision, reasons as columns.

    Alerts stored without reasons (explaining failed) are left out; a reason an alert does not list adds 0.
    """
    with connect(audit_dir) as con:
        bounds = con.execute(
            "SELECT max(decided_at) - to_milliseconds(CAST(? * 86400000 AS BIGINT)), max(decided_at) "
            "FROM decisions WHERE model_version = ?",
            [days, version],
        ).fetchone()
        rows = con.execute(
            "SELECT r.tx_id, r.feature, r.value, r.contribution FROM reasons AS r JOIN decisions AS d USING (tx_id) "
            "WHERE d.model_version = ? AND d.is_alert AND d.decided_at >= ? ORDER BY d.decided_at, r.tx_id",
            [version, bounds[0]],
        ).df()
    if bounds[1] is None:
        raise ExplainError(f"no decisions of model {version!r} in the audit store")
    values = rows.pivot_table(index="tx_id", columns="feature", values="contribution", aggfunc="first", sort=False)
    data = rows.pivot_table(index="tx_id", columns="feature", values="value", aggfunc="first", sort=False, dropna=False)
    order = values.abs().mean().sort_values(ascending=False).index
    values = values.reindex(columns=order).fillna(0.0)
    return ModelSummary(version, bounds[0], bounds[1], values, data.reindex(index=values.index, columns=order))


def plot_summary(summary: ModelSummary, out_dir: str | Path, max_display: int = 20) -> list[Path]:
    """shap's beeswarm (each alert's push per reason, coloured by the feature's value) and mean-|SHAP| bar."""
    if summary.values.empty:
        raise ExplainError(f"model {summary.version!r} has no explained alerts in the window")
    import shap

    # A reason with no value at all (a group of learned inputs, or a feature missing from every alert) goes in as
    # a non-numeric column: shap draws it grey, as it does a categorical feature, rather than colouring it by
    # percentiles of nothing.
    data = summary.data.astype(np.float64)
    valueless = data.columns[data.isna().all()]
    explanation = shap.Explanation(
        values=summary.values.to_numpy(dtype=np.float64),
        data=data.astype(dict.fromkeys(valueless, object)),
        feature_names=list(summary.values.columns),
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f"model {summary.version}: {len(summary.values)} alerts, log-odds"
    return [
        _save(lambda: shap.plots.beeswarm(explanation, max_display=max_display, show=False), out / "summary.png", title),
        _save(lambda: shap.plots.bar(explanation, max_display=max_display, show=False), out / "mean_abs_shap.png", title),
    ]


def _save(draw, path: str | Path, title: str) -> Path:  # type: ignore[no-untyped-def]
    """Draw with shap (which uses pyplot's current figure) on the Agg backend, save as PNG, close."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    pyplot.figure()
    draw()
    figure = pyplot.gcf()
    figure.suptitle(title, fontsize=10)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110, bbox_inches="tight")
    pyplot.close("all")
    return target


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT


__all__ = ["DEFAULT_DAYS", "AlertReport", "ModelSummary", "alert_report", "model_summary", "plot_summary", "plot_waterfall"]
