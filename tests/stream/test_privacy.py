"""Card tokens: keys from the environment or a file, refusal without one, and no raw card id in the audit store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stream.audit_writer import AuditWriter
from stream.codec import AvroCodec
from stream.embedded import EmbeddedBroker
from stream.exceptions import ConfigurationError
from stream.privacy import DEMO_KEY, Tokenizer, load_tokenizer
from stream.producer import send_raw
from stream.settings import Settings
from stream.topics import create_topics

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def no_key(**overrides: object) -> Settings:
    return Settings(**({"hmac_key": None, "hmac_key_file": None, "demo_mode": False} | overrides))


def test_the_key_comes_from_the_environment_or_a_file_and_is_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "k" * 32
    (tmp_path / "key").write_text(key + "\n")  # a mounted secret usually ends with a newline
    monkeypatch.setenv("RISKSTREAM_HMAC_KEY", key)
    from_env = load_tokenizer(Settings())
    from_file = load_tokenizer(no_key(hmac_key_file=tmp_path / "key"))
    assert from_env("card-1") == from_file("card-1") == Tokenizer(key.encode())("card-1")
    assert from_env("card-1") != load_tokenizer(no_key(demo_mode=True))("card-1")
    assert key not in repr(Settings()) and key not in repr(from_env)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, "no HMAC key"),
        ({"hmac_key": "x" * 16, "hmac_key_file": Path("key")}, "not both"),
        ({"hmac_key": "too short"}, "at least 16"),
        ({"hmac_key_file": Path("/nonexistent/key")}, "cannot read"),
    ],
)
def test_the_worker_and_the_audit_writer_refuse_to_start_without_a_usable_key(overrides: dict, message: str) -> None:
    from stream.app import create_app

    settings = no_key(**overrides)
    with pytest.raises(ConfigurationError, match=message):
        create_app(settings)
    with pytest.raises(ConfigurationError, match=message):
        AuditWriter(settings)


def test_the_audit_writer_stores_label_card_ids_as_tokens_only(
    broker: EmbeddedBroker, tmp_path: Path, stored_strings: Callable[[Path], dict[str, set[str]]]
) -> None:
    settings = Settings(
        broker_url=broker.url, app_id="privacy", feedback_topic="privacy-feedback", decisions_topic="privacy-decisions",
        transactions_topic="privacy-transactions", alerts_topic="privacy-alerts", dead_letter_topic="privacy-dead",
        partitions=1, audit_dir=tmp_path / "audit", audit_export_interval_s=0.1, audit_flush_interval_s=0.1,
        session_timeout_s=6.0, demo_mode=True,
    )
    create_topics(settings)
    raw_cards = [f"4111-1111-1111-{i:04d}" for i in range(5)]
    labels = [
        {"tx_id": f"t{i}", "is_fraud": i % 2 == 0, "source": "chargeback", "reported_at": T0 + i,
         "card_id": card, "terminal_id": "term-1"}
        for i, card in enumerate(raw_cards)
    ]
    send_raw(settings, settings.feedback_topic, [AvroCodec("Feedback").encode(label) for label in labels])
    AuditWriter(settings).run(max_idle_s=10.0)  # the first group join alone takes seconds

    stored = stored_strings(settings.audit_dir)
    tokenize = Tokenizer(DEMO_KEY)
    assert stored["labels.card_id"] == {tokenize(card) for card in raw_cards}
    assert not any(card in text for card in raw_cards for texts in stored.values() for text in texts)
