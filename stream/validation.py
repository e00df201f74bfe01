"""Checks on decoded events, before they touch any state: a well-formed Avro record can still be impossible.

Every rejection raises :class:`~stream.exceptions.EventValidationError` with a stable ``reason`` code
and the offending ``field``; the worker dead-letters the event like an undecodable one. Codes:

``invalid_type`` (missing field or wrong type), ``empty_id``, ``id_too_long``, ``invalid_id`` (a control,
format or unprintable character, or surrounding spaces: two spellings of one id), ``amount_not_finite``,
``negative_amount``, ``amount_too_large``, ``timestamp_too_old`` (before 2000-01-01),
``timestamp_in_future`` (over a day ahead of ``now_ms``), ``invalid_currency``, ``unknown_source``,
``field_too_long`` (an optional string over 256 characters).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, get_args

from stream.exceptions import EventValidationError

__all__ = [
    "FEEDBACK_SOURCES",
    "MAX_AMOUNT",
    "MAX_CLOCK_SKEW_MS",
    "MAX_ID_LENGTH",
    "MAX_OPTIONAL_LENGTH",
    "MIN_TIMESTAMP_MS",
    "FeedbackSource",
    "validate_feedback",
    "validate_transaction",
]

FeedbackSource = Literal["chargeback", "analyst", "customer_report"]
FEEDBACK_SOURCES: frozenset[str] = frozenset(get_args(FeedbackSource))

MAX_ID_LENGTH = 128
MAX_OPTIONAL_LENGTH = 256
MAX_AMOUNT = 1e9
MIN_TIMESTAMP_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: older times are unit mistakes (seconds, not ms)
MAX_CLOCK_SKEW_MS = 86_400_000  # one day: producers' clocks may run ahead, but not by days

_TRANSACTION_IDS = ("tx_id", "card_id", "terminal_id")
_TRANSACTION_OPTIONAL = ("merchant_category", "channel", "country", "device_id")
_FEEDBACK_OPTIONAL_IDS = ("card_id", "terminal_id")


def _reject(reason: str, field: str, message: str) -> EventValidationError:
    return EventValidationError(reason, f"{field}: {message}", field=field)


def _typed(record: Mapping[str, Any], field: str, kind: type | tuple[type, ...]) -> Any:
    value = record.get(field)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise _reject("invalid_type", field, f"expected {expected}, got {type(value).__name__}")
    return value


def _check_id(record: Mapping[str, Any], field: str) -> None:
    value = _typed(record, field, str)
    if not value.strip():
        raise _reject("empty_id", field, "is empty")
    if len(value) > MAX_ID_LENGTH:
        raise _reject("id_too_long", field, f"{len(value)} characters, over {MAX_ID_LENGTH}")
    if not value.isprintable() or value != value.strip():
        raise _reject("invalid_id", field, f"{value!r} has an unprintable character or surrounding spaces")


def _check_timestamp(record: Mapping[str, Any], field: str, now_ms: int | None) -> None:
    value = _typed(record, field, int)
    if value < MIN_TIMESTAMP_MS:
        raise _reject("timestamp_too_old", field, f"{value} is before 2000-01-01 (epoch milliseconds expected)")
    if now_ms is not None and value > now_ms + MAX_CLOCK_SKEW_MS:
        raise _reject("timestamp_in_future", field, f"{value} is more than a day after now ({now_ms})")


def _check_optional(record: Mapping[str, Any], field: str) -> None:
    value = record.get(field)
    if value is None:
        return
    if not isinstance(value, str):
        raise _reject("invalid_type", field, f"expected str or None, got {type(value).__name__}")
    if len(value) > MAX_OPTIONAL_LENGTH:
        raise _reject("field_too_long", field, f"{len(value)} characters, over {MAX_OPTIONAL_LENGTH}")


def validate_transaction(record: Mapping[str, Any], now_ms: int | None = None) -> None:
    """Raise EventValidationError if a decoded Transaction is impossible; ``now_ms`` enables the future check.

    >>> tx = {"tx_id": "t1", "event_time": 1_700_000_000_000, "card_id": "c1", "terminal_id": "m1",
    ...       "amount": 12.5, "currency": "EUR"}
    >>> validate_transaction(tx)
    >>> validate_transaction({**tx, "amount": -1.0})
    Traceback (most recent call last):
    ...
    stream.exceptions.EventValidationError: negative_amount: amount: -1.0 is negative
    """
    for field in _TRANSACTION_IDS:
        _check_id(record, field)
    _check_timestamp(record, "event_time", now_ms)
    amount = _typed(record, "amount", (int, float))
    if not math.isfinite(amount):
        raise _reject("amount_not_finite", "amount", f"{amount} is not finite")
    if amount < 0:
        raise _reject("negative_amount", "amount", f"{amount} is negative")
    if amount > MAX_AMOUNT:
        raise _reject("amount_too_large", "amount", f"{amount} is over {MAX_AMOUNT:g}")
    currency = _typed(record, "currency", str)
    if not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
        raise _reject("invalid_currency", "currency", f"{currency!r} is not a three-letter code")
    for field in _TRANSACTION_OPTIONAL:
        _check_optional(record, field)


def validate_feedback(record: Mapping[str, Any], now_ms: int | None = None) -> None:
    """Raise EventValidationError if a decoded Feedback label is unusable.

    >>> validate_feedback({"tx_id": "t1", "is_fraud": True, "source": "analyst", "reported_at": 1_700_000_000_000})
    >>> validate_feedback({"tx_id": "t1", "is_fraud": True, "source": "rumour", "reported_at": 1_700_000_000_000})
    Traceback (most recent call last):
    ...
    stream.exceptions.EventValidationError: unknown_source: source: 'rumour' is not one of analyst, chargeback, customer_report
    """
    _check_id(record, "tx_id")
    _typed(record, "is_fraud", bool)
    source = _typed(record, "source", str)
    if source not in FEEDBACK_SOURCES:
        known = ", ".join(sorted(FEEDBACK_SOURCES))
        raise _reject("unknown_source", "source", f"{source!r} is not one of {known}")
    _check_timestamp(record, "reported_at", now_ms)
    for field in _FEEDBACK_OPTIONAL_IDS:
        if record.get(field) is not None:
            _check_id(record, field)
