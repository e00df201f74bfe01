"""Event validation: every rejection has its stable reason code, and the limits themselves pass."""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest

from stream.codec import AvroCodec
from stream.exceptions import EventDecodeError, EventValidationError, StreamError
from stream.validation import (
    MAX_CLOCK_SKEW_MS,
    MIN_TIMESTAMP_MS,
    validate_feedback,
    validate_transaction,
)

NOW = 1_700_000_000_000
TX = {
    "tx_id": "tx-1",
    "event_time": NOW - 1_000,
    "card_id": "card-1",
    "terminal_id": "term-1",
    "amount": 42.5,
    "currency": "EUR",
    "merchant_category": None,
    "channel": "ecommerce",
    "country": "FR",
    "device_id": None,
}
FEEDBACK = {"tx_id": "tx-1", "is_fraud": True, "source": "chargeback", "reported_at": NOW, "card_id": None, "terminal_id": None}


def _rejected(validate, record: dict[str, Any], **kwargs: Any) -> EventValidationError:
    with pytest.raises(EventValidationError) as caught:
        validate(record, **kwargs)
    return caught.value


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"tx_id": ""}, "empty_id", "tx_id"),
        ({"card_id": "   "}, "empty_id", "card_id"),
        ({"terminal_id": "t" * 129}, "id_too_long", "terminal_id"),
        ({"tx_id": "\u200b"}, "invalid_id", "tx_id"),  # a zero-width space: looks empty, is not
        ({"card_id": "c\x00"}, "invalid_id", "card_id"),
        ({"terminal_id": "t\n1"}, "invalid_id", "terminal_id"),
        ({"card_id": " c1"}, "invalid_id", "card_id"),  # another spelling of c1
        ({"tx_id": None}, "invalid_type", "tx_id"),
        ({"amount": math.nan}, "amount_not_finite", "amount"),
        ({"amount": math.inf}, "amount_not_finite", "amount"),
        ({"amount": -math.inf}, "amount_not_finite", "amount"),
        ({"amount": -0.01}, "negative_amount", "amount"),
        ({"amount": 1e9 + 1}, "amount_too_large", "amount"),
        ({"amount": True}, "invalid_type", "amount"),
        ({"amount": "12.00"}, "invalid_type", "amount"),
        ({"event_time": MIN_TIMESTAMP_MS - 1}, "timestamp_too_old", "event_time"),
        ({"event_time": NOW // 1000}, "timestamp_too_old", "event_time"),  # seconds, not milliseconds
        ({"event_time": float(NOW)}, "invalid_type", "event_time"),
        ({"currency": "EU"}, "invalid_currency", "currency"),
        ({"currency": "EURO"}, "invalid_currency", "currency"),
        ({"currency": "E1R"}, "invalid_currency", "currency"),
        ({"currency": "ÉUR"}, "invalid_currency", "currency"),
        ({"currency": None}, "invalid_type", "currency"),
        ({"channel": "c" * 257}, "field_too_long", "channel"),
        ({"device_id": "d" * 1000}, "field_too_long", "device_id"),
        ({"country": 250}, "invalid_type", "country"),
    ],
)
def test_transaction_rejections(changes, reason, field):
    error = _rejected(validate_transaction, {**TX, **changes}, now_ms=NOW)
    assert (error.reason, error.field) == (reason, field)
    assert field in error.message


def test_missing_field_is_rejected():
    record = {k: v for k, v in TX.items() if k != "card_id"}
    assert _rejected(validate_transaction, record).reason == "invalid_type"


def test_limits_themselves_are_accepted():
    validate_transaction(TX, now_ms=NOW)
    validate_transaction(
        {
            **TX,
            "tx_id": "x" * 128,
            "amount": 0,
            "event_time": MIN_TIMESTAMP_MS,
            "currency": "usd",
            "merchant_category": "m" * 256,
        },
        now_ms=NOW,
    )
    validate_transaction({**TX, "amount": 1e9, "event_time": NOW + MAX_CLOCK_SKEW_MS}, now_ms=NOW)


def test_future_event_time_is_checked_only_against_a_given_clock():
    future = {**TX, "event_time": NOW + MAX_CLOCK_SKEW_MS + 1}
    error = _rejected(validate_transaction, future, now_ms=NOW)
    assert (error.reason, error.field) == ("timestamp_in_future", "event_time")
    validate_transaction(future)


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"source": "rumour"}, "unknown_source", "source"),
        ({"source": "Chargeback"}, "unknown_source", "source"),
        ({"is_fraud": 1}, "invalid_type", "is_fraud"),
        ({"tx_id": ""}, "empty_id", "tx_id"),
        ({"reported_at": 0}, "timestamp_too_old", "reported_at"),
        ({"card_id": ""}, "empty_id", "card_id"),
        ({"terminal_id": "t" * 129}, "id_too_long", "terminal_id"),
        ({"tx_id": "\u200b"}, "invalid_id", "tx_id"),  # a zero-width space: looks empty, is not
        ({"card_id": "c\x00"}, "invalid_id", "card_id"),
        ({"terminal_id": "t\n1"}, "invalid_id", "terminal_id"),
        ({"card_id": " c1"}, "invalid_id", "card_id"),  # another spelling of c1
    ],
)
def test_feedback_rejections(changes, reason, field):
    error = _rejected(validate_feedback, {**FEEDBACK, **changes})
    assert (error.reason, error.field) == (reason, field)


@pytest.mark.parametrize("source", ["chargeback", "analyst", "customer_report"])
def test_known_feedback_sources_pass(source):
    validate_feedback({**FEEDBACK, "source": source, "card_id": "card-1", "terminal_id": "term-1"}, now_ms=NOW)
    validate_feedback({k: v for k, v in FEEDBACK.items() if k not in ("card_id", "terminal_id")} | {"source": source})


def test_feedback_from_the_future_is_rejected_against_a_clock():
    error = _rejected(validate_feedback, {**FEEDBACK, "reported_at": NOW + 2 * MAX_CLOCK_SKEW_MS}, now_ms=NOW)
    assert error.reason == "timestamp_in_future"


def test_a_decoded_nan_amount_reaches_validation():
    codec = AvroCodec("Transaction")
    decoded = codec.decode(codec.encode({**TX, "amount": math.nan}))
    assert _rejected(validate_transaction, decoded).reason == "amount_not_finite"


def test_validation_errors_are_handled_like_decode_errors_and_pickle():
    error = _rejected(validate_transaction, {**TX, "amount": -1.0})
    assert isinstance(error, EventDecodeError) and isinstance(error, StreamError) and isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.field, str(copy)) == (error.reason, error.field, str(error))
    decode_copy = pickle.loads(pickle.dumps(EventDecodeError("truncated", "ends early")))
    assert (decode_copy.reason, decode_copy.message) == ("truncated", "ends early")
