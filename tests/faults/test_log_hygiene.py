"""No raw card id and no secret leaves the worker or the audit writer: not in their logs (debug level, the
dead-letter warnings included), not in the audit store, not on the alerts topic.

Runs outside demo mode, with an HMAC key and a SASL password in the environment as an operator would set
them. The embedded broker speaks neither SASL nor TLS, so the connection stays PLAINTEXT: this shows the
password is not logged at start-up and by the settings, not that a SASL handshake keeps it out of logs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from stream.local import LocalServices
from stream.privacy import Tokenizer
from stream.producer import produce, replay_events, send_raw, transaction_record
from stream.codec import AvroCodec
from stream.topics import create_topics
from tests.e2e.test_end_to_end import consume_all

pytestmark = pytest.mark.e2e

HMAC_KEY = "hmac-key-never-logged-7f3a9c"
SASL_PASSWORD = "sasl-password-never-logged-b41e"
DAYS = 3


def card_number(card: object) -> str:
    """A 16-digit card number for a simulated card: long and distinctive, so a search cannot miss or misfire."""
    return f"4929{int(card):012d}"


def test_no_raw_card_id_or_secret_in_logs_audit_store_or_alerts(
    service_overrides: Callable[..., dict], small_frame: pd.DataFrame, tmp_path: Path,
    stored_strings: Callable[[Path], dict[str, set[str]]],
) -> None:
    frame = small_frame[small_frame["time"] < small_frame["time"].min() + DAYS * 86_400].copy()
    frame["card_id"] = frame["card_id"].map(card_number)
    cards = set(frame["card_id"])
    overrides = service_overrides(
        "hygiene", demo_mode=False, hmac_key=HMAC_KEY, sasl_username="riskstream", sasl_password=SASL_PASSWORD, threshold=0.0,
    )
    # rejects that carry a raw card id: a negative amount, an unknown currency, a truncated message
    template = transaction_record(frame.iloc[0]) | {"tx_id": "bad"}
    codec = AvroCodec("Transaction")
    bad = [codec.encode(template | {"amount": -1.0}), codec.encode(template | {"currency": "XX"}), codec.encode(template)[:-3]]

    with LocalServices(overrides, tmp_path / "logs", log_level="debug") as services:
        settings = services.settings
        create_topics(settings)
        total = len(frame) + int(frame["label"].sum())
        assert produce(replay_events(frame, settings), settings, total=total, progress=False) == total
        send_raw(settings, settings.transactions_topic, bad)
        assert services.wait_for_decisions(len(frame), timeout_s=180) == len(frame)
        alerts = consume_all(settings.bootstrap_servers, settings.alerts_topic, len(frame))
        dead = consume_all(settings.bootstrap_servers, settings.dead_letter_topic, len(bad))

    assert len(alerts) >= len(frame) and len(dead) == len(bad)  # threshold 0: every transaction is an alert
    logs = {path.name: path.read_text(errors="replace") for path in (tmp_path / "logs").iterdir()}
    assert set(logs) == {"audit-writer.log", "worker-0.log"}
    assert all("DEBUG" in text for text in logs.values())  # the debug level was really on
    assert "sent to hygiene-dead-letter" in logs["worker-0.log"]  # the dead-letter warning was logged
    secrets = {HMAC_KEY, SASL_PASSWORD}
    for name, text in logs.items():
        assert not [secret for secret in secrets if secret in text], name
        assert not [card for card in cards if card in text], name
    for message in alerts:
        assert not [card for card in cards if card.encode() in message.value], message.key
    assert not [name for name, text in logs.items() if "demo mode" in text]  # the configured key, not the demo one
    stored = stored_strings(settings.audit_dir)
    assert stored["decisions.card_id"] == {Tokenizer(HMAC_KEY.encode())(card) for card in cards}
    for column, values in stored.items():
        assert not values & cards, column
        assert not [value for value in values for secret in secrets if secret in value], column
