"""The whole path on the real broker: producer → faust worker → alerts topic and DuckDB audit store."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kafka import KafkaConsumer

from audit import query
from models.features import FEATURE_NAMES
from models.registry import save_artifact
from models.replay import replay_features
from models.train import TrainConfig, train_from_frame
from stream.codec import AvroCodec
from stream.embedded import EmbeddedBroker
from stream.local import LocalServices, isolated_overrides
from stream.metrics import sample_total, scrape
from stream.privacy import DEMO_KEY, Tokenizer
from stream.drill import read_topic, terminal_events
from stream.producer import Event, produce, replay_events, send_raw, transaction_record
from stream.repartition import Repartition, partition_for
from stream.topics import create_topics

pytestmark = pytest.mark.e2e


def malformed_messages(frame: pd.DataFrame) -> list[bytes]:
    """Messages the worker must reject: unreadable bytes and readable but impossible transactions."""
    codec = AvroCodec("Transaction")
    template = transaction_record(frame.iloc[0]) | {"tx_id": "bad"}
    valid = codec.encode(template)
    return [
        b"",
        b"definitely not avro",
        b"\x00\x00\x00\x7f\xffgarbage after an unknown schema id",
        valid[:-4],
        valid + b"\x00\x01trailing",
        codec.encode(template | {"amount": -5.0}),
        codec.encode(template | {"amount": math.nan}),
        codec.encode(template | {"tx_id": ""}),
    ]


def consume_all(bootstrap: list[str], topic: str, expected: int, timeout_s: float = 60.0) -> list:
    """Every message on a topic, read from the start until ``expected`` arrived or time ran out."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                             group_id=None, consumer_timeout_ms=2000)
    messages: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend(batch)
    finally:
        consumer.close()
    return messages


def test_transactions_are_scored_explained_and_audited(
    broker: EmbeddedBroker, small_frame: pd.DataFrame, tmp_path: Path, stored_strings: Callable[[Path], dict[str, set[str]]]
) -> None:
    frame = small_frame[small_frame["time"] < small_frame["time"].min() + 14 * 86_400].reset_index(drop=True)
    history = frame[frame["time"] < frame["time"].min() + 10 * 86_400].reset_index(drop=True)
    artifact = train_from_frame(history, replay_features(history), valid_days=3, config=TrainConfig(epochs=8))
    overrides = isolated_overrides("e2e", broker.url, tmp_path, model_registry=tmp_path / "models")
    save_artifact(artifact, overrides["model_registry"])
    bad = malformed_messages(frame)

    with LocalServices(overrides, tmp_path / "logs") as services:
        settings = services.settings
        create_topics(settings)
        total = len(frame) + int(frame["label"].sum())
        assert produce(replay_events(frame, settings), settings, total=total, progress=False) == total
        send_raw(settings, settings.transactions_topic, bad)
        left_over = [b"\x00\x00\x00\x00\x05" + bad[-1][5:]]  # a stage message under a retired internal schema id
        send_raw(settings, f"{settings.app_id}-by-terminal", left_over)
        stored = services.wait_for_decisions(len(frame), timeout_s=240)
        dead = consume_all(settings.bootstrap_servers, settings.dead_letter_topic, len(bad) + len(left_over))
        alerts = consume_all(settings.bootstrap_servers, settings.alerts_topic, 1, timeout_s=20)
        time.sleep(3)  # anything sent twice would show up in the audit store by now
        services.check_alive()
        exposition = scrape(settings.web_port)
        health = json.loads(scrape(settings.web_port, path="/health"))
        ready = json.loads(scrape(settings.web_port, path="/ready"))
        rekeyed = read_topic(settings, f"{settings.app_id}-by-card", first_s=5.0)
        by_terminal = [record for _, record in terminal_events(settings)]

    assert stored == len(frame)
    passed = sorted(record["transaction"]["transaction"]["tx_id"] for record in by_terminal if record["transaction"])
    assert passed == sorted(frame["tx_id"]), "every transaction went on to its terminal once"
    assert sum(record["feedback"] is not None for record in by_terminal) == int(frame["label"].sum())
    assert rekeyed == [], "keyed by card, every transaction is on its card's partition: none re-keyed"
    per_tx = query(settings.audit_dir, "SELECT tx_id, count(*) AS n FROM decisions GROUP BY tx_id").to_pandas()
    assert set(per_tx["tx_id"]) == set(frame["tx_id"])
    assert (per_tx["n"] == 1).all()

    assert sorted(message.value for message in dead) == sorted(bad + left_over)
    assert sample_total(exposition, "riskstream_dead_letters_total") == len(bad) + len(left_over)
    assert sample_total(exposition, "riskstream_decisions_total") == len(frame)
    assert sample_total(exposition, "riskstream_undelivered_batches_total") == 0
    headers = [dict(message.headers) for message in dead]  # why, and where each came from
    assert all(header.get("reason") and header.get("source-partition") and header.get("source-offset") for header in headers)
    assert [header["source-topic"] for header in headers].count(f"{settings.app_id}-by-terminal".encode()) == len(left_over)
    assert sorted(header["field"] for header in headers if "field" in header) == [b"amount", b"amount", b"tx_id"]
    assert health == {"status": "ok"}
    assert ready["status"] == "ready" and all(ready["checks"].values())
    for metric in ("riskstream_events_total", "riskstream_alerts_total", "riskstream_explanation_gap_flagged_total", "riskstream_score_batch_seconds", "riskstream_consumer_lag", "riskstream_undelivered_batches_total"):
        assert f"# TYPE {metric} " in exposition
    assert 'riskstream_consumer_lag{partition="0",topic="e2e-transactions"}' in exposition
    assert sample_total(exposition, "riskstream_score_batch_seconds_count") > 0

    threshold = artifact.threshold_logit
    assert query(settings.audit_dir, "SELECT DISTINCT threshold_logit FROM decisions").column(0).to_pylist() == [threshold]
    expected_alerts = set(query(settings.audit_dir, f"SELECT tx_id FROM decisions WHERE score_logit >= {threshold!r}").column(0).to_pylist())
    flagged = set(query(settings.audit_dir, "SELECT tx_id FROM decisions WHERE is_alert").column(0).to_pylist())
    assert expected_alerts, "the test data should produce alerts"
    assert flagged == expected_alerts
    alert_codec = AvroCodec("Alert")
    all_alerts = consume_all(settings.bootstrap_servers, settings.alerts_topic, len(expected_alerts))
    decoded = [alert_codec.decode(message.value) for message in all_alerts]
    assert {alert["tx_id"] for alert in decoded} == expected_alerts
    assert {alert["threshold_logit"] for alert in decoded} == {threshold}
    assert all(message.key.decode() == alert["tx_id"] for message, alert in zip(all_alerts, decoded))
    assert alerts

    # Decisions leave in record batches (stream/batch_producer.py): one message each, keyed by tx_id, on the
    # partition Kafka's default partitioner gives that key, as a consumer that relies on keys expects.
    decision_messages = consume_all(settings.bootstrap_servers, settings.decisions_topic, len(frame))
    assert sorted(message.key.decode() for message in decision_messages) == sorted(frame["tx_id"])
    assert all(message.partition == partition_for(message.key, settings.partitions) for message in decision_messages)

    sums = query(
        settings.audit_dir,
        "SELECT d.tx_id, d.score_logit, d.base_value, d.additivity_gap, sum(r.contribution) AS total "
        "FROM decisions d JOIN reasons r USING (tx_id) WHERE d.is_alert GROUP BY ALL",
    ).to_pandas()
    assert set(sums["tx_id"]) == expected_alerts
    gaps = (sums["base_value"] + sums["total"] - sums["score_logit"]).abs()
    assert gaps.max() <= 1e-4
    assert (sums["additivity_gap"] <= 1e-4).all()
    # privacy: no raw card id in the audit store or on the alerts topic, only their tokens
    token_of = {tx_id: Tokenizer(DEMO_KEY)(str(card)) for tx_id, card in zip(frame["tx_id"], frame["card_id"])}
    assert all(alert["card_id"] == token_of[alert["tx_id"]] for alert in decoded)
    stored_cards = {column: values for column, values in stored_strings(settings.audit_dir).items() if column.endswith(".card_id")}
    assert stored_cards["decisions.card_id"] == {token_of[tx_id] for tx_id in frame["tx_id"]}
    assert all(values <= set(token_of.values()) for values in stored_cards.values())
    for alert in decoded:
        assert 1 <= len(alert["reasons"]) <= 5
        assert alert["additivity_gap"] <= 1e-4

    # The live worker computed exactly the features and scores of the offline path that training uses.
    stored = query(settings.audit_dir, "SELECT tx_id, score, features FROM decisions").to_pylist()
    row_of = {tx_id: row for row, tx_id in enumerate(frame["tx_id"])}
    order = [row_of[decision["tx_id"]] for decision in stored]
    live = np.array([[dict(decision["features"])[name] for name in FEATURE_NAMES] for decision in stored])
    offline = replay_features(frame)[order]
    np.testing.assert_array_equal(live, offline.features)
    # The scores depend on the card sequences too, which the worker carried through the repartition topic.
    # float32 inference: BLAS sums in an order that depends on the batch size, hence not bit for bit.
    np.testing.assert_allclose([decision["score"] for decision in stored], artifact.predict_proba(offline), rtol=0, atol=1e-6)


def test_transactions_not_keyed_by_card_are_rekeyed_by_card_and_get_the_same_features(
    broker: EmbeddedBroker, small_frame: pd.DataFrame, tmp_path: Path
) -> None:
    """A producer that keys transactions otherwise: those on another partition than their card's go through the
    by-card topic first, the others straight to the card stage, and every feature is still the offline one
    (each card's transactions share a key, so they all take the same path, in order)."""
    frame = small_frame[small_frame["time"] < small_frame["time"].min() + 5 * 86_400].reset_index(drop=True)
    overrides = isolated_overrides("e2e-rekeyed", broker.url, tmp_path, model_registry=tmp_path / "models")
    model = train_from_frame(frame, replay_features(frame), valid_days=2, warmup_days=1, config=TrainConfig(epochs=2))
    save_artifact(model, overrides["model_registry"])

    with LocalServices(overrides, tmp_path / "logs") as services:
        settings = services.settings
        create_topics(settings)

        def keyed_otherwise(event: Event) -> Event:
            return replace(event, key=event.key + b"/elsewhere") if event.topic == settings.transactions_topic else event

        total = len(frame) + int(frame["label"].sum())
        assert produce(map(keyed_otherwise, replay_events(frame, settings)), settings, total=total, progress=False) == total
        assert services.wait_for_decisions(len(frame), timeout_s=240) == len(frame)
        rekeyed, unreadable = Repartition("TransactionBatch", settings.partitions).read(
            message.value for message in read_topic(settings, f"{settings.app_id}-by-card"))

    def partition(card: str, suffix: str = "") -> int:
        return partition_for(f"{card}{suffix}".encode(), settings.partitions)

    away = {tx_id for tx_id, card in zip(frame["tx_id"], frame["card_id"]) if partition(card, "/elsewhere") != partition(card)}
    assert 0 < len(away) < len(frame)
    assert sorted(record["tx_id"] for record in rekeyed) == sorted(away) and not unreadable
    stored = query(settings.audit_dir, "SELECT tx_id, features FROM decisions").to_pylist()
    assert sorted(decision["tx_id"] for decision in stored) == sorted(frame["tx_id"])
    row_of = {tx_id: row for row, tx_id in enumerate(frame["tx_id"])}
    live = np.array([[dict(decision["features"])[name] for name in FEATURE_NAMES] for decision in stored])
    np.testing.assert_array_equal(live, replay_features(frame)[[row_of[decision["tx_id"]] for decision in stored]].features)
