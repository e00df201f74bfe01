"""The worker's Prometheus metrics, served at ``/metrics`` on its web server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS = Counter("riskstream_events_total", "Input events accepted, by topic", ["topic"], registry=REGISTRY)
DEAD_LETTERS = Counter("riskstream_dead_letters_total", "Input events rejected to the dead-letter topic, by reason", ["reason"], registry=REGISTRY)
DECISIONS = Counter("riskstream_decisions_total", "Transactions scored", registry=REGISTRY)
ALERTS = Counter("riskstream_alerts_total", "Alerts sent", registry=REGISTRY)
LABELS = Counter("riskstream_labels_total", "Feedback labels by outcome (applied; pending: waiting for their transaction; unroutable: no terminal)", ["outcome"], registry=REGISTRY)
EXPLANATION_GAPS = Counter("riskstream_explanation_gap_flagged_total", "Alerts whose reasons do not add up within tolerance", registry=REGISTRY)
BATCH_SECONDS = Histogram(
    "riskstream_batch_seconds",
    "Time to process one batch, by stage",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)

__all__ = ["ALERTS", "BATCH_SECONDS", "DEAD_LETTERS", "DECISIONS", "EVENTS", "EXPLANATION_GAPS", "LABELS", "REGISTRY"]
