"""The worker's Prometheus metrics, served at ``/metrics`` on its web server."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS = Counter("riskstream_events_total", "Input events accepted, by topic", ["topic"], registry=REGISTRY)
DEAD_LETTERS = Counter("riskstream_dead_letters_total", "Input events rejected to the dead-letter topic, by reason", ["reason"], registry=REGISTRY)
DECISIONS = Counter("riskstream_decisions_total", "Transactions scored", registry=REGISTRY)
ALERTS = Counter("riskstream_alerts_total", "Alerts sent", registry=REGISTRY)
LABELS = Counter("riskstream_labels_total", "Feedback labels by outcome (applied, on arrival or once their transaction came; pending: arrived before their transaction and waited for it; unroutable: no terminal)", ["outcome"], registry=REGISTRY)
LATE_TRANSACTIONS = Counter("riskstream_late_transactions_total", "Transactions that reached their terminal after one more than the label delay newer, whose terminal features therefore missed them (card partitions days apart in event time)", registry=REGISTRY)
UNDELIVERED = Counter("riskstream_undelivered_batches_total", "Record batches (decisions, state writes) the broker never acknowledged, by topic", ["topic"], registry=REGISTRY)
EXPLANATION_GAPS = Counter("riskstream_explanation_gap_flagged_total", "Alerts sent flagged: explaining failed or the reasons do not add up within tolerance", registry=REGISTRY)
BATCH_SECONDS = Histogram(
    "riskstream_batch_seconds",
    "Time to process one batch, by stage",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
MODEL_SWITCHES = Counter(
    "riskstream_model_switches_total",
    "Model changes picked up from the registry, by role (champion, shadow) and outcome (switched; refused: the new model could not be loaded)",
    ["role", "outcome"],
    registry=REGISTRY,
)
SCORE_BATCH_SECONDS = Histogram(
    "riskstream_score_batch_seconds",
    "Time of one batch's model call and explanations (the scoring thread's share of the terminal stage)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)


class ConsumerLag(Collector):
    """``riskstream_consumer_lag{topic,partition}``: messages behind the partition's end, read at scrape time.

    The worker sets :attr:`source` to a function yielding ``(topic, partition, lag)`` for the partitions
    it owns; reading at scrape time needs no timer and is never stale.
    """

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[tuple[str, int, int]]] = lambda: ()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("riskstream_consumer_lag", "Messages between the worker's position and the partition's end", labels=["topic", "partition"])
        for topic, partition, lag in self.source():
            family.add_metric([topic, str(partition)], lag)
        yield family


CONSUMER_LAG = ConsumerLag()
REGISTRY.register(CONSUMER_LAG)


def sample_total(exposition: str, name: str, **labels: str) -> float:
    r"""Sum of a metric's samples over all its labels, or over those with the given label values, read from
    Prometheus' text exposition.

    >>> sample_total('a_total{x="1"} 2.0\na_total{x="2"} 3.0\na_created 9.0', "a_total")
    5.0
    >>> sample_total('a_total{x="1"} 2.0\na_total{x="2",source_x="1"} 3.0', "a_total", x="1")
    2.0
    """
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def scrape(port: int, host: str = "127.0.0.1", timeout_s: float = 10.0, path: str = "/metrics") -> str:
    """A page of a worker's web server (``/metrics`` unless told otherwise)."""
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout_s) as response:
        return response.read().decode()


__all__ = [
    "ALERTS",
    "BATCH_SECONDS",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "DECISIONS",
    "EVENTS",
    "EXPLANATION_GAPS",
    "LABELS",
    "LATE_TRANSACTIONS",
    "MODEL_SWITCHES",
    "REGISTRY",
    "SCORE_BATCH_SECONDS",
    "UNDELIVERED",
    "ConsumerLag",
    "sample_total",
    "scrape",
]
