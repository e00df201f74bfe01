"""The analysts' views over the segment files: one definition for ``audit.reader`` and ``catalog.duckdb``.

=====================  ==================================================================================
``decisions``          one row per scored transaction; ``features`` as a map of feature name to value
``alerts``             the decisions at or above their threshold
``reasons``            every alert's reasons, ranked by absolute contribution (1 = largest)
``labels``             the latest verdict per tx_id (by ``reported_at``, then arrival), with ``reports``
``label_history``      every label received, a repeated report kept once
``labels_unmatched``   labels for tx_ids the store has no decision for (yet, or ever)
``decisions_labelled`` decisions with their latest label (``label`` NULL while none is known)
``daily``              per event day: volume, alert rate, precision and recall on labelled decisions, score
                       quantiles
``drift``              per event day, model and variable (the score or a feature): population stability
                       index against the model's training data
``models``             feature names (the order of ``features``) of each model version seen
``reference_bins``     each model's training-data bins, the baseline of ``drift``
``explanation_drift``  per event day and reason: how many of the day's alerts it leads (rank 1) and their
                       share of the day's alerts, a change visible without labels
``shadow_agreement``   per event day, champion and shadow model: decisions both scored, each one's alerts,
                       the share where they agree on alerting, the mean log-odds gap and the scores' correlation
=====================  ==================================================================================
"""

from __future__ import annotations

from pathlib import Path

from audit.schema import SEGMENTS_DIR, TX_KEY, sql_string

__all__ = ["VIEWS", "segment_scan", "view_statements"]

#: Every view an analyst can query, in the order they are defined.
VIEWS = (
    "reasons", "label_history", "models", "reference_bins", "decisions", "alerts", "labels", "labels_unmatched",
    "decisions_labelled", "daily", "drift", "explanation_drift", "shadow_agreement",
)

_LATEST_LABEL = (
    "SELECT * EXCLUDE (seq), count(*) OVER (PARTITION BY tx_id) AS reports FROM label_history "
    "QUALIFY row_number() OVER (PARTITION BY tx_id ORDER BY reported_at DESC, received_at DESC, seq DESC) = 1"
)
_DAILY = """
SELECT CAST(d.event_time AS DATE) AS day,
       count(*) AS decisions,
       count(*) FILTER (WHERE d.is_alert) AS alerts,
       alerts / decisions AS alert_rate,
       count(l.is_fraud) AS labelled,
       count(*) FILTER (WHERE l.is_fraud) AS frauds,
       count(l.is_fraud) FILTER (WHERE d.is_alert) AS labelled_alerts,
       count(*) FILTER (WHERE d.is_alert AND l.is_fraud) AS true_alerts,
       true_alerts / nullif(labelled_alerts, 0) AS precision,
       true_alerts / nullif(frauds, 0) AS recall,
       approx_quantile(d.score, 0.5) AS score_p50,
       approx_quantile(d.score, 0.9) AS score_p90,
       approx_quantile(d.score, 0.99) AS score_p99
FROM {decisions} AS d LEFT JOIN (
    SELECT tx_key, is_fraud FROM {labels}
    QUALIFY row_number() OVER (PARTITION BY tx_key ORDER BY reported_at DESC, received_at DESC, seq DESC) = 1
) AS l USING (tx_key)
GROUP BY day
"""
# Bin of a value: 1 + the number of edges <= it (see models.reference); shares under 1e-4 count as 1e-4.
# PSI sums (actual - expected) * ln(actual / expected) over every bin, observed or not; a bin with no
# decisions adds the floor's term, so the sum is: all bins at the floor, corrected for the observed ones.
# One pass (no CTE read twice), so a filter on day reaches the scan.
_DRIFT = """
WITH observed AS (
    SELECT CAST(d.event_time AS DATE) AS day, d.model_version, b.variable, b.edges, b.expected,
           CASE WHEN b.position IS NULL THEN d.score ELSE d.features[b.position] END AS value
    FROM {decisions} AS d JOIN reference_bins AS b
      ON b.model_version = d.model_version AND (b.position IS NULL OR b.position <= len(d.features))
), counts AS (
    SELECT day, model_version, variable, 1 + len(list_filter(edges, lambda e: e <= value)) AS bin,
           count(*) AS n, any_value(expected) AS expected
    FROM observed WHERE isfinite(value) GROUP BY day, model_version, variable, bin
), shares AS (
    SELECT *, greatest(n / sum(n) OVER (PARTITION BY day, model_version, variable), {floor}) AS actual,
           greatest(expected[bin], {floor}) AS share
    FROM counts
)
SELECT day, model_version, variable, sum(n) AS decisions,
       any_value(list_sum(list_transform(expected, lambda e: ({floor} - greatest(e, {floor})) * ln({floor} / greatest(e, {floor})))))
       + sum((actual - share) * ln(actual / share) - ({floor} - share) * ln({floor} / share)) AS psi
FROM shares GROUP BY day, model_version, variable
""".replace("{floor}", "1e-4")
# An alert without reasons (explaining failed) counts in the day's total and leads with no reason.
_EXPLANATION_DRIFT = """
SELECT CAST(a.event_time AS DATE) AS day, r.feature AS reason, count(*) AS alerts_led,
       any_value(daily.alerts) AS alerts, count(*) / any_value(daily.alerts) AS share
FROM alerts AS a JOIN reasons AS r ON r.tx_id = a.tx_id AND r.rank = 1
JOIN (SELECT CAST(event_time AS DATE) AS day, count(*) AS alerts FROM alerts GROUP BY ALL) AS daily
  ON daily.day = CAST(a.event_time AS DATE)
GROUP BY ALL ORDER BY day, share DESC, reason
"""

_SHADOW_AGREEMENT = """
SELECT CAST(event_time AS DATE) AS day, model_version, shadow_model_version, count(*) AS decisions,
       count(*) FILTER (WHERE is_alert) AS champion_alerts, count(*) FILTER (WHERE shadow_is_alert) AS shadow_alerts,
       count(*) FILTER (WHERE is_alert AND shadow_is_alert) AS both_alert,
       count(*) FILTER (WHERE is_alert = shadow_is_alert) / count(*) AS agreement,
       avg(abs(score_logit - shadow_score_logit)) AS mean_abs_logit_gap, corr(score, shadow_score) AS score_correlation
FROM {decisions} WHERE shadow_model_version IS NOT NULL
GROUP BY ALL ORDER BY day, model_version, shadow_model_version
"""


def segment_scan(root: Path, table: str) -> str:
    """SQL reading every segment of ``table``: what the views and other readers of the store scan."""
    return f"read_parquet({sql_string(root / SEGMENTS_DIR / table / '*.parquet')})"


def view_statements(root: str | Path) -> list[str]:
    """``CREATE VIEW`` statements over the segments of the store at ``root`` (absolute, so the views move nowhere).

    >>> [s.split(" AS ")[0].removeprefix("CREATE OR REPLACE VIEW ") for s in view_statements("/data/audit")] == list(VIEWS)
    True
    """
    root = Path(root).absolute()
    decisions = segment_scan(root, "decisions")
    bodies = {
        "reasons": f"SELECT * FROM {segment_scan(root, 'reasons')}",
        "label_history": f"SELECT * EXCLUDE (tx_key) FROM {segment_scan(root, 'labels')}",
        "models": f"SELECT * FROM {segment_scan(root, 'models')}",
        "reference_bins": f"SELECT * FROM {segment_scan(root, 'reference_bins')}",
        # features as a map again; NULL when the model's names are unknown or do not fit
        "decisions": (
            "SELECT d.* EXCLUDE (tx_key) REPLACE (CASE WHEN len(m.feature_names) = len(d.features) "
            "THEN map(m.feature_names, d.features) END AS features) "
            f"FROM {decisions} AS d LEFT JOIN models AS m ON m.model_version = d.model_version"
        ),
        "alerts": "SELECT * FROM decisions WHERE is_alert",
        "labels": _LATEST_LABEL,
        "labels_unmatched": f"SELECT * FROM labels WHERE {TX_KEY} NOT IN (SELECT tx_key FROM {decisions})",
        "decisions_labelled": (
            "SELECT d.*, l.is_fraud AS label, l.source AS label_source, l.reported_at AS labelled_at "
            "FROM decisions AS d LEFT JOIN labels AS l USING (tx_id)"
        ),
        "daily": _DAILY.format(decisions=decisions, labels=segment_scan(root, "labels")),
        "drift": _DRIFT.format(decisions=decisions),
        "explanation_drift": _EXPLANATION_DRIFT,
        "shadow_agreement": _SHADOW_AGREEMENT.format(decisions=decisions),
    }
    return [f"CREATE OR REPLACE VIEW {name} AS {bodies[name]}" for name in VIEWS]
