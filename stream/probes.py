"""The worker's operational pages on its Faust web server: ``/health``, ``/ready`` and ``/metrics``.

``/health`` (liveness) answers as long as the event loop serves requests: restart the worker when it does not.
``/ready`` (readiness) answers 200 only once the model is loaded and the consumer owns partitions outside a
rebalance, 503 with the failing checks otherwise: send traffic or count the worker as serving only then.
``/metrics`` is Prometheus' text exposition of :mod:`stream.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import faust
from faust.exceptions import ConsumerNotStarted
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream import metrics


def _assignment(app: faust.App) -> set[TP]:
    """The partitions the worker owns; none while its consumer has not started (a scrape during start-up)."""
    try:
        return set(app.consumer.assignment())
    except ConsumerNotStarted:
        return set()


def consumer_lag(app: faust.App) -> Iterator[tuple[str, int, int]]:
    """``(topic, partition, lag)`` for each partition the worker owns and has read from.

    Lag is the partition's end offset (high watermark) less the next offset the worker will read. Faust
    keeps the last offset read per partition only in its consumer's ``_read_offset``; no public call gives it.
    """
    consumer = app.consumer
    for tp in sorted(_assignment(app)):
        highwater = consumer.highwater(tp)
        read = consumer._read_offset.get(tp)
        if highwater is not None and read is not None:
            yield tp.topic, tp.partition, max(int(highwater) - (read + 1), 0)


def readiness(app: faust.App, model_loaded: Callable[[], bool]) -> dict[str, bool]:
    """The readiness checks, each True when it passes."""
    return {
        "model_loaded": model_loaded(),
        "partitions_assigned": bool(_assignment(app)),
        "not_rebalancing": not app.rebalancing,
    }


def add_probes(app: faust.App, model_loaded: Callable[[], bool]) -> None:
    """Register the three pages on ``app`` and point the consumer-lag gauge at its consumer."""
    metrics.CONSUMER_LAG.source = lambda: consumer_lag(app)

    @app.page("/health")
    async def health(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        checks = readiness(app, model_loaded)
        ok = all(checks.values())
        return web.json({"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics_page(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        # aiohttp refuses a charset inside content_type, and Prometheus' content type carries one
        return web.bytes(generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


__all__ = ["add_probes", "consumer_lag", "readiness"]
