"""The audit writer killed with SIGKILL mid-batch while decisions stream in, and restarted: nothing lost,
nothing doubled, and the DuckDB file and Parquet segments open cleanly afterwards.

The writer flushes the store and only then commits its offsets, so a crash re-delivers what it had not
committed; the store keeps the first copy of each tx_id. Duplicates are also in the stream itself, as an
at-least-once worker would send them.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from audit import query
from audit.schema import SEGMENTS_DIR
from audit.store import WRITER_DB
from stream.codec import AvroCodec
from stream.embedded import EmbeddedBroker
from stream.local import LocalServices, isolated_overrides
from stream.producer import send_raw
from stream.topics import create_topics

pytestmark = pytest.mark.e2e

T0 = 1_767_225_600_000  # 2026-01-01
DECISIONS = 12_000
CHUNK = 500
PAUSE_S = 1.0
REASON = {"feature": "amount", "label": "amount is 50.00", "value": 50.0, "contribution": 1.5}


def decision(number: int) -> dict:
    """Decision ``number``; every 50th is an alert with one reason."""
    alert = number % 50 == 0
    return {
        "tx_id": f"tx-{number}", "event_time": T0 + number, "card_id": "token", "terminal_id": "m", "amount": 50.0,
        "score": 0.9 if alert else 0.1, "score_logit": 0.0, "threshold": 0.5, "is_alert": alert, "model_version": "unregistered",
        "decided_at": T0 + number + 5, "features": [50.0], "base_value": -1.0 if alert else None,
        "additivity_gap": 0.0 if alert else None, "reasons": [REASON] if alert else [],
    }


def stream_decisions(services: LocalServices, killed: threading.Event, done: threading.Event) -> None:
    """Send the decisions a chunk at a time; every 10th chunk goes twice. The last two chunks wait until the
    test has killed the writer twice, so that the kills fall before the end on a slow machine too."""
    codec = AvroCodec("Decision")
    settings = services.settings
    for start in range(0, DECISIONS, CHUNK):
        if start >= DECISIONS - 2 * CHUNK:
            killed.wait(timeout=240)
        chunk = [codec.encode(decision(number)) for number in range(start, start + CHUNK)]
        send_raw(settings, settings.decisions_topic, chunk + (chunk[: CHUNK // 2] if start // CHUNK % 10 == 3 else []))
        time.sleep(PAUSE_S)
    done.set()


def test_a_killed_audit_writer_loses_and_doubles_nothing(broker: EmbeddedBroker, tmp_path: Path) -> None:
    overrides = isolated_overrides("writer-crash", broker.url, tmp_path, model_registry=tmp_path / "models",
                                   audit_flush_interval_s=1.0, audit_export_interval_s=0.5)
    kills = []
    with LocalServices(overrides, tmp_path / "logs", workers=0) as services:
        create_topics(services.settings)
        killed, done = threading.Event(), threading.Event()
        producer = threading.Thread(target=stream_decisions, args=(services, killed, done), daemon=True)
        producer.start()
        for _ in range(2):  # twice: once early, once after a restart and rejoin
            seen = services.decisions_stored()
            deadline = time.monotonic() + 60
            while services.decisions_stored() <= seen and time.monotonic() < deadline:
                services.check_alive()
                time.sleep(0.2)
            time.sleep(0.7)  # between flushes: rows buffered, offsets uncommitted
            services.kill_writer()
            kills.append(services.decisions_stored())
            services.start_writer()
        killed.set()
        producer.join(timeout=120)
        services.wait_for_decisions(DECISIONS, timeout_s=240)
        time.sleep(3)  # a late second copy would be visible by now
        stored = services.decisions_stored()

    assert done.is_set() and all(0 < kill < DECISIONS for kill in kills), kills
    assert stored == DECISIONS
    counts = query(overrides["audit_dir"], "SELECT count(*) AS rows, count(DISTINCT tx_id) AS ids FROM decisions").to_pylist()
    assert counts == [{"rows": DECISIONS, "ids": DECISIONS}]
    reasons = query(overrides["audit_dir"], "SELECT count(*) AS rows, count(DISTINCT tx_id) AS ids FROM reasons").to_pylist()
    assert reasons == [{"rows": DECISIONS // 50, "ids": DECISIONS // 50}]
    # the writer's own file opens (DuckDB replays its log) and agrees with what readers see
    with duckdb.connect(str(overrides["audit_dir"] / WRITER_DB), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT tx_id) FROM decisions").fetchone() == (DECISIONS, DECISIONS)
    segments = list((overrides["audit_dir"] / SEGMENTS_DIR).rglob("*.parquet"))
    assert segments and not list((overrides["audit_dir"] / SEGMENTS_DIR).rglob("*.tmp"))
    assert sum(pq.read_metadata(path).num_rows for path in segments if path.parent.name == "decisions") == DECISIONS
