"""Model roll-out on the real broker with a real worker: shadow scoring, then a promotion mid-stream."""

from __future__ import annotations

import copy
import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
import torch
from kafka import KafkaConsumer

from audit import query
from models.features import DAY
from models.network import new_version
from models.registry import save_artifact, set_champion, set_shadow
from models.replay import replay_features
from models.train import TrainConfig, train_from_frame
from stream.codec import AvroCodec
from stream.embedded import EmbeddedBroker, free_port
from stream.learning import replay
from stream.local import LocalServices
from stream.metrics import scrape
from stream.producer import produce, replay_events
from stream.topics import create_topics

pytestmark = pytest.mark.e2e


def wait_until_ready(services: LocalServices, timeout_s: float = 60.0) -> None:
    """Wait until the worker's /ready page says it has its model and its partitions."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        services.check_alive()
        try:
            if json.loads(scrape(services.settings.web_port, path="/ready"))["status"] == "ready":
                return
        except OSError:  # not listening yet, or 503 while not ready
            pass
        time.sleep(0.5)
    raise TimeoutError("the worker did not become ready")


def alert_ids(settings, expected: int) -> set[str]:
    """tx_ids of the alerts on the alerts topic, read from the start until ``expected`` came or 20 s passed."""
    codec = AvroCodec("Alert")
    consumer = KafkaConsumer(settings.alerts_topic, bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    found: set[str] = set()
    try:
        for _ in range(40):
            for batch in consumer.poll(timeout_ms=500).values():
                found.update(codec.decode(message.value)["tx_id"] for message in batch)
            if len(found) >= expected:
                break
    finally:
        consumer.close()
    return found


def test_shadow_scores_are_stored_and_a_promotion_mid_stream_loses_and_doubles_nothing(
    broker: EmbeddedBroker, small_frame: pd.DataFrame, tmp_path: Path
) -> None:
    start = small_frame["time"].min()
    history = small_frame[small_frame["time"] < start + 8 * DAY].reset_index(drop=True)
    stream = small_frame[(small_frame["time"] >= start + 10 * DAY) & (small_frame["time"] < start + 13 * DAY)].reset_index(drop=True)
    champion = train_from_frame(history, replay_features(history), valid_days=3, warmup_days=2, config=TrainConfig(hidden=(16, 8), epochs=2))
    challenger = copy.deepcopy(champion)  # alerts more: the champion's output moved up, same threshold
    with torch.no_grad():
        challenger.network.head[-1].bias += 1.0
    challenger.version = new_version(challenger.network, datetime(2026, 1, 1, tzinfo=timezone.utc))
    overrides = {
        "broker_url": broker.url, "app_id": "rollout", "partitions": 2, "demo_mode": True, "batch_size": 100,
        "transactions_topic": "rollout-transactions", "feedback_topic": "rollout-feedback", "decisions_topic": "rollout-decisions",
        "alerts_topic": "rollout-alerts", "dead_letter_topic": "rollout-dead-letters",
        "model_registry": tmp_path / "models", "audit_dir": tmp_path / "audit", "data_dir": tmp_path / "worker",
        "web_port": free_port(), "audit_export_interval_s": 0.5, "audit_flush_interval_s": 0.25, "model_poll_interval_s": 0.5,
        "session_timeout_s": 6.0, "rebalance_timeout_s": 3.0,
    }
    registry = overrides["model_registry"]
    save_artifact(champion, registry)
    save_artifact(challenger, registry, promote=False)
    set_shadow(registry, challenger.version)

    with LocalServices(overrides, tmp_path / "logs") as services:
        settings = services.settings
        create_topics(settings)
        wait_until_ready(services)
        events = replay_events(stream, settings, label_delay_days=None)
        producer = threading.Thread(target=produce, args=(events, settings), kwargs={"rate": 150.0, "progress": False})
        producer.start()  # about 10 s of transactions
        assert services.wait_for_decisions(150, timeout_s=30) >= 150
        set_champion(registry, challenger.version)  # while transactions are still arriving
        set_shadow(registry, None)
        producer.join()
        stored = services.wait_for_decisions(len(stream), timeout_s=60)
        exposition = scrape(settings.web_port)
        services.check_alive()

    assert stored == len(stream)
    decisions = query(settings.audit_dir, "SELECT * FROM decisions ORDER BY decided_at").to_pandas()
    assert sorted(decisions["tx_id"]) == sorted(stream["tx_id"])  # every transaction once: none lost, none doubled
    before = decisions[decisions["model_version"] == champion.version]
    after = decisions[decisions["model_version"] == challenger.version]
    assert len(before) >= 100 and len(after) >= 100 and len(before) + len(after) == len(decisions)
    assert before["decided_at"].max() <= after["decided_at"].min()  # one switch, between two batches
    assert decisions["batch_id"].notna().all()
    assert 'riskstream_model_switches_total{outcome="switched",role="champion"} 1.0' in exposition

    # In shadow, the challenger scored every event the champion scored, and never alerted.
    assert (before["shadow_model_version"] == challenger.version).all() and before["shadow_score"].notna().all()
    assert after["shadow_model_version"].isna().all()
    shadow_only = set(before.loc[before["shadow_is_alert"] & ~before["is_alert"], "tx_id"])
    assert shadow_only, "the challenger should alert where the champion does not"
    expected_alerts = set(decisions.loc[decisions["is_alert"], "tx_id"])
    sent = alert_ids(settings, len(expected_alerts))
    assert sent == expected_alerts and not sent & shadow_only
    agreement = query(settings.audit_dir, "SELECT * FROM shadow_agreement").to_pandas()
    assert agreement["decisions"].sum() == len(before)
    assert agreement["shadow_alerts"].sum() - agreement["both_alert"].sum() == len(shadow_only)

    # The stored inputs give back every live score to the bit, with the model that made it.
    own = replay(settings.audit_dir, registry, datetime(2000, 1, 1), datetime(2100, 1, 1))
    assert own.decisions == len(stream) and own.changed == 0, own.to_dict()
    first = replay(settings.audit_dir, registry, datetime(2000, 1, 1), datetime(2100, 1, 1), model=champion.version)
    assert first.by_version[champion.version]["changed"] == 0
    assert first.by_version[challenger.version]["scores_changed"] == len(after)
