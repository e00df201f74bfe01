"""Avro codec: round trips, schema evolution, the wire-format ambiguity and malformed input."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from typing import Any

import faust
import pytest
from fastavro import parse_schema, schemaless_writer
from faust.serializers import codecs as faust_codecs
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.codec import (
    SCHEMA_DIR,
    DEFAULT_SCHEMA_IDS,
    MAX_MESSAGE_BYTES,
    AvroCodec,
    SchemaRegistry,
    faust_codec_name,
    load_schema,
    register_faust_codecs,
)
from stream.exceptions import EventDecodeError, EventEncodeError, StreamError

T0 = 1_700_000_000_000

TRANSACTION = {
    "tx_id": "tx-1",
    "event_time": T0,
    "card_id": "card-1",
    "terminal_id": "term-1",
    "amount": 42.5,
    "currency": "EUR",
    "merchant_category": "5411",
    "channel": "chip",
    "country": "FR",
    "device_id": None,
}
FEEDBACK = {
    "tx_id": "tx-1",
    "is_fraud": True,
    "source": "chargeback",
    "reported_at": T0 + 86_400_000,
    "card_id": "card-1",
    "terminal_id": "term-1",
}
REASON = {"feature": "amount", "label": "amount is 42.50", "value": 42.5, "contribution": 1.25}
DECIDED = {
    "tx_id": "tx-1",
    "event_time": T0,
    "card_id": "card-1",
    "terminal_id": "term-1",
    "amount": 42.5,
    "score": 0.9,
    "score_logit": 2.197,
    "threshold": 0.5,
    "model_version": "v3",
    "decided_at": T0 + 12,
}
SAMPLES: dict[str, dict[str, Any]] = {
    "Transaction": TRANSACTION,
    "Feedback": FEEDBACK,
    "Decision": {
        **DECIDED,
        "is_alert": True,
        "threshold_logit": 0.0,
        "features": [42.5, 3.0],
        "base_value": -3.0,
        "additivity_gap": 1e-9,
        "explanation_flagged": False,
        "reasons": [REASON, {**REASON, "feature": "recent_spending_pattern", "value": None}],
        "sequence": [0.5, 1.25, 0.0, 3.0],
        "batch_id": 12345,
        "batch_row": 7,
        "shadow_model_version": "v4",
        "shadow_score": 0.7,
        "shadow_score_logit": 0.847,
        "shadow_is_alert": False,
    },
    "Alert": {
        **DECIDED,
        "threshold_logit": 0.0,
        "explanation_space": "log-odds",
        "base_value": -3.0,
        "additivity_gap": 1e-9,
        "explanation_flagged": False,
        "reasons": [REASON, {**REASON, "feature": "card_tx_count_1d", "contribution": 0.5}],
    },
    "TerminalEvent": {"transaction": None, "feedback": FEEDBACK},
    "EnrichedTransaction": {"transaction": TRANSACTION, "card_features": bytes(range(48)), "card_sequence": bytes(16)},
    "TransactionBatch": {"events": [TRANSACTION, {**TRANSACTION, "tx_id": "tx-2"}]},
    "TerminalEventBatch": {"events": [{"transaction": None, "feedback": FEEDBACK},
                                      {"transaction": {"transaction": TRANSACTION, "card_features": bytes(8), "card_sequence": b""}, "feedback": None}]},
}
SCHEMAS = sorted(SAMPLES)


def test_every_default_schema_has_a_sample():
    assert set(SAMPLES) == {entry for entry in DEFAULT_SCHEMA_IDS.values() if isinstance(entry, str)}


@pytest.mark.parametrize("wire_format", ["plain", "confluent", "auto"])
@pytest.mark.parametrize("name", SCHEMAS)
def test_round_trip(name, wire_format):
    codec = AvroCodec(name, wire_format)
    assert codec.decode(codec.encode(SAMPLES[name])) == SAMPLES[name]


@pytest.mark.parametrize("name", SCHEMAS)
def test_confluent_header_names_the_schema_id(name):
    data = AvroCodec(name, "confluent").encode(SAMPLES[name])
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == SchemaRegistry().id_of(name)
    assert data[5:] == AvroCodec(name, "plain").encode(SAMPLES[name])


@pytest.mark.parametrize("retired", [5, 6, 8])
def test_an_internal_message_of_a_retired_layout_is_refused_not_misread(retired):
    """Terminal events written before card readings were packed carried arrays of doubles under ids 5, 6, 8."""
    codec = AvroCodec("TerminalEventBatch", "confluent")
    body = codec.encode(SAMPLES["TerminalEventBatch"])[5:]
    with pytest.raises(EventDecodeError) as caught:
        codec.decode(b"\x00" + retired.to_bytes(4, "big") + body)
    assert caught.value.reason == "unknown_schema_id"


def test_terminal_event_with_a_transaction_and_defaults_filled():
    codec = AvroCodec("TerminalEvent")
    minimal = {k: TRANSACTION[k] for k in list(TRANSACTION)[:5]}
    decoded = codec.decode(codec.encode({"transaction": {"transaction": minimal, "card_features": bytes(8), "card_sequence": b""}}))
    assert decoded["feedback"] is None
    assert decoded["transaction"]["card_features"] == bytes(8)
    assert decoded["transaction"]["transaction"]["currency"] == "EUR"
    assert decoded["transaction"]["transaction"]["channel"] is None


def test_timestamps_decode_as_epoch_millis_ints():
    codec = AvroCodec("Transaction")
    as_datetime = {**TRANSACTION, "event_time": datetime.fromtimestamp(T0 / 1000, tz=timezone.utc)}
    decoded = codec.decode(codec.encode(as_datetime))
    assert type(decoded["event_time"]) is int and decoded["event_time"] == T0
    nested = AvroCodec("EnrichedTransaction").decode(AvroCodec("EnrichedTransaction").encode(SAMPLES["EnrichedTransaction"]))
    assert type(nested["transaction"]["event_time"]) is int


def test_record_written_with_an_older_schema_gets_the_new_defaults():
    old_transaction = {
        "type": "record",
        "name": "Transaction",
        "namespace": "riskstream",
        "fields": [
            {"name": "tx_id", "type": "string"},
            {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "card_id", "type": "string"},
            {"name": "terminal_id", "type": "string"},
            {"name": "amount", "type": "double"},
        ],
    }
    registry = SchemaRegistry({**DEFAULT_SCHEMA_IDS, 100: old_transaction})
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(old_transaction), {k: TRANSACTION[k] for k in list(TRANSACTION)[:5]})
    data = b"\x00" + (100).to_bytes(4, "big") + body.getvalue()

    decoded = AvroCodec("Transaction", "confluent", registry).decode(data)

    assert decoded == {**TRANSACTION, "merchant_category": None, "channel": None, "country": None}
    assert registry.id_of("Transaction") == 1  # encoders keep writing the current version


def test_decision_written_before_the_model_inputs_and_shadow_were_kept_gets_their_defaults():
    current = json.loads((SCHEMA_DIR / "Decision.avsc").read_text())
    added = ("sequence", "batch_id", "batch_row", "shadow_model_version", "shadow_score", "shadow_score_logit", "shadow_is_alert")
    old_decision = {**current, "fields": [field for field in current["fields"] if field["name"] not in added]}
    registry = SchemaRegistry({**DEFAULT_SCHEMA_IDS, 100: old_decision})
    old = {key: value for key, value in SAMPLES["Decision"].items() if key not in added}
    body = io.BytesIO()
    schemaless_writer(body, registry.schema_for(100, logical_types=False), old)
    data = b"\x00" + (100).to_bytes(4, "big") + body.getvalue()

    decoded = AvroCodec("Decision", "confluent", registry).decode(data)

    assert decoded == {**old, "sequence": [], "batch_id": None, "batch_row": None, "shadow_model_version": None, "shadow_score": None,
                       "shadow_score_logit": None, "shadow_is_alert": None}


@pytest.mark.parametrize(("name", "previous", "current"), [("Decision", 3, 12), ("Alert", 4, 13)])
def test_previous_layout_reads_without_a_logit_threshold(name, previous, current):
    """Decisions and alerts written before they carried threshold_logit (under the ids the previous version's
    workers write) still reach the audit writer and alert consumers; encoders now write the new ids."""
    registry = SchemaRegistry()
    old = {key: value for key, value in SAMPLES[name].items() if key != "threshold_logit"}
    body = io.BytesIO()
    schemaless_writer(body, registry.schema_for(previous, logical_types=False), old)

    decoded = AvroCodec(name).decode(b"\x00" + previous.to_bytes(4, "big") + body.getvalue())

    assert decoded == {**old, "threshold_logit": None}
    assert AvroCodec(name).encode(SAMPLES[name])[:5] == b"\x00" + current.to_bytes(4, "big")


def test_id_of_another_schema_is_a_schema_mismatch():
    data = AvroCodec("Feedback", "confluent").encode(FEEDBACK)
    with pytest.raises(EventDecodeError) as caught:
        AvroCodec("Transaction", "confluent").decode(data)
    assert caught.value.reason == "schema_mismatch"


def _reason(codec: AvroCodec, data: Any) -> str:
    with pytest.raises(EventDecodeError) as caught:
        codec.decode(data)
    assert caught.value.message
    return caught.value.reason


@pytest.mark.parametrize("wire_format", ["plain", "confluent", "auto"])
def test_truncated_and_trailing_bytes(wire_format):
    codec = AvroCodec("Transaction", wire_format)
    data = codec.encode(TRANSACTION)
    assert _reason(codec, data[:-1]) == "truncated"
    assert _reason(codec, data[: len(data) // 2]) == "truncated"
    assert _reason(codec, data + b"\x00") == "trailing_bytes"


@pytest.mark.parametrize("wire_format", ["plain", "confluent", "auto"])
def test_oversized_messages_are_refused_unread(wire_format):
    assert _reason(AvroCodec("Transaction", wire_format), b"\x02" * (MAX_MESSAGE_BYTES + 1)) == "too_large"
    small = AvroCodec("Transaction", wire_format, max_message_bytes=16)
    assert _reason(small, AvroCodec("Transaction", wire_format).encode(TRANSACTION)) == "too_large"
    with pytest.raises(EventEncodeError):
        AvroCodec("Alert", wire_format, max_message_bytes=64).encode(SAMPLES["Alert"])


def test_garbage_and_framing_errors():
    plain, confluent, auto = (AvroCodec("Transaction", fmt) for fmt in ("plain", "confluent", "auto"))
    body = plain.encode(TRANSACTION)
    assert _reason(confluent, b"\x01" + (1).to_bytes(4, "big") + body) == "bad_magic_byte"
    assert _reason(confluent, b"\x00\x00\x01") == "truncated"
    assert _reason(confluent, b"\x00" + (999).to_bytes(4, "big") + body) == "unknown_schema_id"
    # Framed with an id this consumer lacks: auto reports the id, not a confusing plain-read error.
    assert _reason(auto, b"\x00" + (999).to_bytes(4, "big") + body) == "unknown_schema_id"
    assert _reason(plain, b"\x06\xff\xfe\xfd") == "invalid_avro"  # not UTF-8
    assert _reason(auto, b"") == "truncated"
    assert _reason(auto, "not bytes") == "not_bytes"


def test_plain_record_starting_with_a_zero_byte_decodes_in_auto_mode():
    record = {**TRANSACTION, "tx_id": ""}
    data = AvroCodec("Transaction", "plain").encode(record)
    assert data[0] == 0 and len(data) >= 5
    assert AvroCodec("Transaction", "auto").decode(data) == record
    # Even when bytes 1-4 spell a known id, the failed framed read falls back to plain.
    colliding = SchemaRegistry({int.from_bytes(data[1:5], "big"): "Transaction"})
    assert AvroCodec("Transaction", "auto", colliding).decode(data) == record
    assert AvroCodec("Transaction", "auto").decode(bytearray(data)) == record


def test_decode_many_keeps_going_past_bad_messages():
    codec = AvroCodec("Feedback")
    good = codec.encode(FEEDBACK)
    records, errors = codec.decode_many([good, b"junk", good[:-2], good])
    assert records == [FEEDBACK, FEEDBACK]
    assert [(index, error.reason) for index, error in errors] == [(1, "truncated"), (2, "truncated")]


def test_encode_rejects_records_that_do_not_fit():
    codec = AvroCodec("Transaction")
    with pytest.raises(EventEncodeError, match="Transaction"):
        codec.encode({k: v for k, v in TRANSACTION.items() if k != "amount"})
    with pytest.raises(EventEncodeError) as caught:
        codec.encode({**TRANSACTION, "amount": "twelve"})
    assert isinstance(caught.value, StreamError) and not isinstance(caught.value, EventDecodeError)


def test_configuration_errors():
    with pytest.raises(StreamError, match="unknown schema"):
        load_schema("Nope")
    with pytest.raises(StreamError, match="wire_format"):
        AvroCodec("Transaction", "json")  # type: ignore[arg-type]
    with pytest.raises(StreamError, match="no id"):
        AvroCodec("Reason", "confluent")
    with pytest.raises(StreamError, match="twice"):
        SchemaRegistry({1: "Transaction", 2: "riskstream.Transaction"})
    with pytest.raises(StreamError, match="4-byte"):
        SchemaRegistry({2**32: "Transaction"})
    with pytest.raises(EventDecodeError) as caught:
        SchemaRegistry().schema_for(42)
    assert caught.value.reason == "unknown_schema_id"


def test_schema_for_keeps_logical_types_unless_asked():
    registry = SchemaRegistry()
    event_time = {f["name"]: f["type"] for f in registry.schema_for(1)["fields"]}["event_time"]
    assert event_time["logicalType"] == "timestamp-millis"
    wire_event_time = {f["name"]: f["type"] for f in registry.schema_for(1, logical_types=False)["fields"]}["event_time"]
    assert wire_event_time == "long" or "logicalType" not in wire_event_time


@pytest.mark.parametrize("name", SCHEMAS)
def test_faust_codecs_round_trip(name):
    register_faust_codecs()
    codec_name = faust_codec_name(name)
    assert codec_name in faust_codecs.codecs
    assert faust_codecs.loads(codec_name, faust_codecs.dumps(codec_name, SAMPLES[name])) == SAMPLES[name]
    chained = f"{codec_name}|binary"  # Faust codec chaining clones the codec with its settings
    assert faust_codecs.loads(chained, faust_codecs.dumps(chained, SAMPLES[name])) == SAMPLES[name]


@pytest.fixture
def plain_faust_codecs():
    register_faust_codecs(wire_format="plain")
    yield
    register_faust_codecs()


def test_faust_record_with_avro_serializer(plain_faust_codecs):
    class Label(faust.Record, serializer="avro-feedback"):
        tx_id: str
        is_fraud: bool
        source: str
        reported_at: int

    label = Label(tx_id="tx-9", is_fraud=False, source="analyst", reported_at=T0)
    data = label.dumps()
    assert data == AvroCodec("Feedback", "plain").encode({**label.asdict(), "card_id": None, "terminal_id": None})
    assert Label.loads(data).tx_id == "tx-9"
    with pytest.raises(EventDecodeError):
        faust_codecs.loads("avro-feedback", b"\x02")


_CODECS = [AvroCodec(name, fmt) for name in SCHEMAS for fmt in ("plain", "confluent", "auto")]
_MESSAGES = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda schema_id, body: b"\x00" + schema_id.to_bytes(4, "big") + body, st.integers(0, 8), st.binary(max_size=300)),
)


@settings(max_examples=400, deadline=None, database=None)
@given(codec=st.sampled_from(_CODECS), data=_MESSAGES)
def test_arbitrary_bytes_decode_or_raise_event_decode_error(codec, data):
    try:
        record = codec.decode(data)
    except EventDecodeError as error:
        assert error.reason and error.message
    else:
        assert isinstance(record, dict)
