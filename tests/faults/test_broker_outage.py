"""The broker stopped mid-stream and started again: every transaction is decided exactly once.

The embedded broker keeps its data in a local S3 server (stream.object_store) that stays up while the broker
process is stopped, as a Kafka broker keeps its disk: it comes back with its topics, messages and committed
offsets. Two days of transactions are produced; once the worker has scored its first two batches (of 50)
the broker is stopped, stays down for a few seconds and comes back on the same port; then four more days
are produced. So the outage hits the worker (decisions in flight, offsets not all committed) and the audit
writer mid-stream. Nobody touches them: they must reconnect by themselves, the worker go on from its
committed offsets (at least once: some transactions are scored again) and the audit store keep one
decision per transaction.

A broker that came back empty fails this (measured on the memory-only broker: nothing produced after the
restart was scored). The producer does not send during the outage: on this broker a producer retrying
through it lost a few acknowledged messages in some runs (README, "The embedded broker"), a loss on the
way in that no consumer can make good. The 30-second outage is ``bench/broker_outage.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from audit import query
from stream.embedded import EmbeddedBroker, free_port
from stream.local import LocalServices
from stream.metrics import sample_total, scrape
from stream.object_store import LocalObjectStore
from stream.producer import produce, replay_events
from stream.topics import create_topics

pytestmark = pytest.mark.e2e

OUTAGE_S = 8.0
DAY = 86_400
BATCH = 50


def wait_until_scored(services: LocalServices, count: int, timeout_s: float) -> int:
    """Poll worker 0's decision counter until it reaches ``count``; returns the last value read."""
    deadline = time.monotonic() + timeout_s
    scored = 0
    while scored < count and time.monotonic() < deadline:
        services.check_alive()
        try:
            scored = int(sample_total(scrape(services.worker_port(0), timeout_s=2.0), "riskstream_decisions_total"))
        except OSError:  # not listening yet
            pass
        time.sleep(0.05)
    return scored


def test_every_transaction_is_decided_once_across_a_broker_restart(
    service_overrides: Callable[..., dict], small_frame: pd.DataFrame, tmp_path: Path
) -> None:
    start = small_frame["time"].min()
    transactions = small_frame[small_frame["time"] < start + 6 * DAY]
    before, after = transactions[transactions["time"] < start + 2 * DAY], transactions[transactions["time"] >= start + 2 * DAY]
    port = free_port()
    with LocalObjectStore() as store:
        broker = EmbeddedBroker(port, store=store).start()
        overrides = service_overrides("outage", broker_url=broker.url, batch_size=BATCH)
        try:
            with LocalServices(overrides, tmp_path / "logs") as services:
                settings = services.settings
                create_topics(settings)
                services.wait_until_ready(timeout_s=180)
                produce(replay_events(before, settings, None), settings, progress=False)
                scored_at_stop = wait_until_scored(services, 2 * BATCH, timeout_s=180)
                broker.stop()
                time.sleep(OUTAGE_S)
                services.check_alive()
                broker = EmbeddedBroker(port, store=store).start()
                produce(replay_events(after, settings, None), settings, progress=False)
                assert services.wait_for_decisions(len(transactions), timeout_s=180) == len(transactions)
                time.sleep(3)  # a late second copy would show by now
                services.check_alive()
                stored = services.decisions_stored()
        finally:
            broker.stop()

    assert 2 * BATCH <= scored_at_stop < len(before), "the broker was to stop while transactions were still being scored"
    per_tx = query(overrides["audit_dir"], "SELECT tx_id, count(*) AS n FROM decisions GROUP BY tx_id").to_pandas()
    assert stored == len(transactions) == len(per_tx)
    assert (per_tx["n"] == 1).all()
    assert set(per_tx["tx_id"]) == set(transactions["tx_id"].astype(str))
