"""The audit writer on the real broker: a poll of decisions decoded in one read, models recorded, bad input skipped."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import crc32c
import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.record import util as kafka_record_util

from audit import AuditStore, query
from models.network import BehaviourModel, ModelArtifact, ModelInputs, new_version
from models.reference import reference_profile
from models.registry import save_artifact
from stream.audit_writer import AuditWriter
from stream.avro_batch import AvroBatchDecoder
from stream.codec import AvroCodec
from stream.embedded import EmbeddedBroker
from stream.exceptions import StreamError
from stream.producer import send_raw
from stream.settings import Settings
from stream.topics import create_topics

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NAMES = ("amount", "is_night")


def saved_model(registry: Path) -> str:
    """A small model in the registry whose manifest carries a reference profile."""
    network = BehaviourModel(len(NAMES), (2,), sequence_dim=4, summary_size=2)
    version = new_version(network, datetime(2026, 1, 1, tzinfo=timezone.utc))
    x = np.column_stack([np.arange(100.0), np.arange(100) % 2])
    artifact = ModelArtifact(version, NAMES, network, np.zeros(2), np.ones(2), ModelInputs(x[:4], np.zeros((4, 8, 4))), 0.5, 7.0,
                             reference=reference_profile(x, np.linspace(0, 1, 100), NAMES))
    save_artifact(artifact, registry)
    return version


def decision(tx_id: str, model: str, alert: bool = False) -> dict:
    reasons = [{"feature": "amount", "label": "amount is 50.00", "value": 50.0, "contribution": 1.5}] if alert else []
    return {
        "tx_id": tx_id, "event_time": T0, "card_id": "tok", "terminal_id": "m", "amount": 50.0, "score": 0.9 if alert else 0.1,
        "score_logit": 0.0, "threshold": 0.5, "is_alert": alert, "model_version": model, "decided_at": T0 + 5,
        "features": [50.0, 1.0], "base_value": -1.0 if alert else None, "additivity_gap": 0.0 if alert else None,
        "reasons": reasons,
    }


def test_decisions_are_stored_with_named_features_and_bad_messages_are_skipped(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = Settings(
        broker_url=broker.url, app_id="writer", feedback_topic="writer-feedback", decisions_topic="writer-decisions",
        transactions_topic="writer-transactions", alerts_topic="writer-alerts", dead_letter_topic="writer-dead",
        partitions=1, audit_dir=tmp_path / "audit", model_registry=tmp_path / "models",
        audit_export_interval_s=0.1, audit_flush_interval_s=0.1, session_timeout_s=6.0, demo_mode=True,
    )
    create_topics(settings)
    version = saved_model(settings.model_registry)
    framed = AvroCodec("Decision")
    plain = AvroCodec("Decision", "plain")
    messages = (
        [framed.encode(decision(f"t{i}", version, alert=i == 0)) for i in range(50)]
        + [plain.encode(decision("plain-1", version)), b"\x00\x00\x00\x00\x03 not a decision", b"junk"]
        + [framed.encode(decision("t1", version)), framed.encode(decision("ghost-1", "not-registered"))]
    )
    send_raw(settings, settings.decisions_topic, messages)
    writer = AuditWriter(settings)
    writer.run(max_idle_s=10.0)  # the first group join alone takes seconds

    assert writer.rejected == 2
    stored = query(settings.audit_dir, "SELECT tx_id, features FROM decisions").to_pylist()
    features = {row["tx_id"]: dict(row["features"]) if row["features"] is not None else None for row in stored}
    assert len(stored) == 52 and set(features) == {f"t{i}" for i in range(50)} | {"plain-1", "ghost-1"}
    assert features["t7"] == features["plain-1"] == {"amount": 50.0, "is_night": 1.0}
    assert features["ghost-1"] is None  # unknown model: kept, its features unnamed
    assert query(settings.audit_dir, "SELECT tx_id, rank, feature FROM reasons").to_pylist() == [
        {"tx_id": "t0", "rank": 1, "feature": "amount"}
    ]
    drift = query(settings.audit_dir, "SELECT variable, decisions FROM drift ORDER BY variable").to_pylist()
    assert drift == [{"variable": name, "decisions": 51} for name in ("amount", "is_night", "score")]


def test_a_poll_of_decisions_is_read_in_one_block() -> None:
    """Regression: a boolean default in the Decision schema (explanation_flagged) made polars refuse every block,
    and the writer silently fell back to decoding one message at a time, ten times slower."""
    codec = AvroCodec("Decision")
    full = decision("t0", "v1", alert=True) | {"explanation_flagged": True, "sequence": [0.25] * 32, "batch_id": 7, "batch_row": 0,
                                              "shadow_model_version": "v2", "shadow_score": 0.5, "shadow_score_logit": 0.0, "shadow_is_alert": True}
    batch = AvroBatchDecoder(codec).decode([codec.encode(full), codec.encode(decision("t1", "v1"))])
    assert batch.table is not None and batch.records == [] and batch.table.num_rows == 2
    first = batch.table.slice(0, 1).to_pylist()[0]
    assert first["sequence"] == [0.25] * 32 and first["shadow_is_alert"] is True and first["batch_id"] == 7


def test_a_nan_in_the_first_decision_keeps_the_poll_in_one_block() -> None:
    """The block's check compares its first record with a copy of it at the end: NaN must compare equal."""
    codec = AvroCodec("Decision")
    nan_gap = decision("t0", "v1", alert=True) | {"additivity_gap": math.nan}
    batch = AvroBatchDecoder(codec).decode([codec.encode(nan_gap), codec.encode(decision("t1", "v1"))])
    assert batch.table is not None and batch.records == [] and batch.table.num_rows == 2
    assert math.isnan(batch.table.column("additivity_gap")[0].as_py())


def test_a_decision_from_a_newer_worker_stops_the_writer_instead_of_being_skipped(tmp_path: Path) -> None:
    """Skipped, its offset would be committed and the decision lost: the writer stops before that."""
    value = AvroCodec("Decision").encode(decision("t0", "v1"))
    newer = value[:1] + (99).to_bytes(4, "big") + value[5:]  # the same body under a schema id not known yet
    settings = Settings(audit_dir=tmp_path / "audit", model_registry=tmp_path / "models", demo_mode=True)
    with AuditStore(settings.audit_dir) as store:
        writer = AuditWriter(settings)
        junk = b"\x00" * 5 + value[5:]  # a zero byte, then id 0, which no version used
        assert writer.add_decisions(store, [b"junk", junk, value]) == 1 and writer.rejected == 2  # malformed: skipped
        with pytest.raises(StreamError, match="schema id 99, newer than this audit writer's 13: .* Upgrade the audit writer"):
            writer.add_decisions(store, [value, newer])


def test_a_commit_refused_while_the_broker_is_down_is_retried_not_fatal(tmp_path: Path) -> None:
    """Regression: the broker stopped between a flush and its commit, and the writer exited on the
    connection error; the rows were stored already, so the commit waits for the next flush instead."""
    with EmbeddedBroker() as private:
        settings = Settings(
            broker_url=private.url, app_id="refused", decisions_topic="refused-decisions", feedback_topic="refused-feedback",
            partitions=1, audit_dir=tmp_path / "audit", model_registry=tmp_path / "models", demo_mode=True,
        )
        create_topics(settings)
        send_raw(settings, settings.decisions_topic, [AvroCodec("Decision").encode(decision("t0", "v1"))])
        consumer = KafkaConsumer(bootstrap_servers=private.bootstrap, group_id="refused-audit", enable_auto_commit=False,
                                 auto_offset_reset="earliest")
        consumer.assign([TopicPartition(settings.decisions_topic, 0)])
        writer, store = AuditWriter(settings), AuditStore(settings.audit_dir)
        try:
            assert writer.add_poll(store, consumer.poll(timeout_ms=10_000)) == 1
            private.stop()
            writer._start_flush(store, consumer)
            writer._commit_flushed(consumer, wait=True)
            assert writer._uncommitted == {TopicPartition(settings.decisions_topic, 0): 1}  # kept for the next flush
            assert store.flush().decisions_inserted == 0  # the row went in with the refused flush
        finally:
            store.close()
            consumer.close(autocommit=False)
    assert query(settings.audit_dir, "SELECT tx_id FROM decisions").column(0).to_pylist() == ["t0"]


def test_kafka_python_computes_record_batch_crcs_in_c() -> None:
    """The writer's consumer checks a CRC-32C over every record batch it reads (and riskstream's producer writes
    one): with the ``crc32c`` package kafka-python does it in C; its pure-Python fallback cost 7x the CPU."""
    assert kafka_record_util.calc_crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert kafka_record_util._crc32c is crc32c.crc32c
