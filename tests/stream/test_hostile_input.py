"""Hostile input, generated: whatever arrives, decoding and validation either pass an event or reject it
with a reason, and the card and terminal state only ever sees valid events and stays consistent.

Examples per test come from ``RISKSTREAM_FUZZ_EXAMPLES`` (default 300 in the suite); each example is a batch
of up to six messages (at least three transactions). The run recorded in BENCHMARKS.md, 100,000 examples and
at least 200,000 messages, is five runs of 10,000 per test (``--timeout=0``: longer than the suite's limit):

    RISKSTREAM_FUZZ_EXAMPLES=10000 python -m pytest tests/stream/test_hostile_input.py --timeout=0 --hypothesis-seed=1 --hypothesis-show-statistics

Nearly all of an example's time is hypothesis drawing it, so the strategies keep draws few: codecs are
built once, and a record is drawn plausible with at most one unusual field rather than field by field.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from models.features import CardState, TerminalState
from stream.codec import MAX_MESSAGE_BYTES, AvroCodec
from stream.exceptions import EventEncodeError
from stream.pipeline import apply_card_stage, apply_terminal_stage, decode_valid
from stream.validation import validate_feedback, validate_transaction

EXAMPLES = int(os.environ.get("RISKSTREAM_FUZZ_EXAMPLES", "300"))
NOW_MS = 1_767_225_600_000  # 2026-01-01
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

LONG = st.integers(-(2**63), 2**63 - 1)
# Plausible values, often at their limits, so that many generated events pass and reach the state ...
PLAUSIBLE_IDS = st.one_of(st.sampled_from(["c1", "c2", "t1", "t2"]), st.text(st.characters(min_codepoint=33), min_size=1, max_size=128))
PLAUSIBLE_TIMES = st.integers(NOW_MS - 400 * 86_400_000, NOW_MS + 86_400_000)
PLAUSIBLE_AMOUNTS = st.one_of(st.floats(min_value=0, max_value=10_000), st.sampled_from([0.0, -0.0, 5e-324, 1e9]))
PLAUSIBLE_CURRENCIES = st.sampled_from(["EUR", "USD", "EUR", "GBP"])


@dataclass(frozen=True)
class Repeated:
    """A string of one repeated character, spelled out only when its message is encoded: hypothesis keeps
    what it draws, so drawn 1 MB strings would pile up in memory (about 0.3 MB an example)."""

    char: str
    size: int


# ... and hostile ones: empty, blank and 1 MB ids (a repeated character is cheap to generate), any long,
# NaN, infinities, negative and huge amounts, unknown currencies and channels
HOSTILE_IDS = st.builds(Repeated, st.characters(), st.sampled_from([0, 129, 1_000_000]))
HOSTILE_TIMES = st.one_of(LONG, st.sampled_from([0, -1, NOW_MS + 10**10]))
HOSTILE_AMOUNTS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-1.0, 1e9 + 1, 1e308, math.nan, math.inf, -math.inf]))
HOSTILE_CURRENCIES = st.text(max_size=4)


def mostly(plausible: st.SearchStrategy, hostile: st.SearchStrategy, one_in: int) -> st.SearchStrategy:
    """One value in ``one_in`` from ``hostile``, the rest from ``plausible``."""
    return st.integers(0, one_in - 1).flatmap(lambda draw: hostile if draw == 0 else plausible)


def one_unusual_field(common: st.SearchStrategy[dict], unusual: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict]:
    """Records from ``common``, one in twenty with a given field set to a value drawn from ``unusual`` instead.

    One unusual field at a time makes its own check the one that fires (with several hostile fields, the
    first check hides the rest), and costs one draw for the choice instead of one per field.
    """
    fields = st.sampled_from([None] * (20 - len(unusual)) + list(unusual))

    @st.composite
    def records(draw: st.DrawFn) -> dict:
        record = draw(common)
        field = draw(fields)
        if field is not None:
            record[field] = draw(unusual[field])
        return record

    return records()


# Optional strings: absent (null) in the common record, sometimes present, valid or not (unknown channels).
OPTIONAL = st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["chip", "contactless", "telepathy", "x" * 300]))
TRANSACTIONS = one_unusual_field(
    st.fixed_dictionaries(
        {"tx_id": PLAUSIBLE_IDS, "event_time": PLAUSIBLE_TIMES, "card_id": PLAUSIBLE_IDS, "terminal_id": PLAUSIBLE_IDS,
         "amount": PLAUSIBLE_AMOUNTS, "currency": PLAUSIBLE_CURRENCIES}
    ),
    {"tx_id": HOSTILE_IDS, "event_time": HOSTILE_TIMES, "card_id": HOSTILE_IDS, "terminal_id": HOSTILE_IDS,
     "amount": HOSTILE_AMOUNTS, "currency": HOSTILE_CURRENCIES,
     "merchant_category": OPTIONAL, "channel": OPTIONAL, "country": OPTIONAL, "device_id": OPTIONAL},
)
FEEDBACK = one_unusual_field(
    st.fixed_dictionaries(
        {"tx_id": PLAUSIBLE_IDS, "is_fraud": st.booleans(), "reported_at": PLAUSIBLE_TIMES,
         "source": st.sampled_from(["chargeback", "analyst", "customer_report", "rumour", ""]),
         "card_id": st.one_of(st.none(), PLAUSIBLE_IDS), "terminal_id": st.one_of(st.none(), PLAUSIBLE_IDS)}
    ),
    {"tx_id": HOSTILE_IDS, "reported_at": HOSTILE_TIMES, "card_id": HOSTILE_IDS, "terminal_id": HOSTILE_IDS},
)


def _mutate(data: bytes, mutation: tuple[str, int, int]) -> bytes:
    """The encoded message as a broken producer or a bad network might deliver it."""
    how, position, byte = mutation
    cut = position % (len(data) + 1)
    if how == "intact":
        return data
    if how == "truncated":
        return data[:cut]
    if how == "extended":
        return data + bytes([byte]) * (1 + position % 64)
    if how == "oversized":
        return data.ljust(MAX_MESSAGE_BYTES + 1 + position % 64, bytes([byte]))
    if how == "flipped":
        return data[:cut] + bytes([byte ^ 0xFF]) + data[cut + 1 :]
    if how == "wrong_magic":
        return bytes([1 + byte % 255]) + data[1:]
    if how == "wrong_schema_id":
        return data[:1] + (position % 1000 + 9).to_bytes(4, "big") + data[5:]
    return b""  # empty


# Two messages in three arrive intact; the rest broken one of seven ways, at a drawn position and byte.
BROKEN = st.tuples(
    st.sampled_from(["truncated", "extended", "oversized", "flipped", "wrong_magic", "wrong_schema_id", "empty"]),
    st.integers(0, 10**6),
    st.integers(0, 255),
)
MUTATIONS = mostly(st.just(("intact", 0, 0)), BROKEN, one_in=3)


# Built once, as the worker builds its codecs once (each parses the packaged schemas).
TRANSACTION_CODECS = {wire: AvroCodec("Transaction", wire) for wire in ("plain", "confluent", "auto")}
FEEDBACK_CODEC = AvroCodec("Feedback", "auto")


def _messages(codec: AvroCodec, batch: list[tuple[dict, tuple[str, int, int]]]) -> list[bytes]:
    messages = []
    for record, mutation in batch:
        record = {key: value.char * value.size if isinstance(value, Repeated) else value for key, value in record.items()}
        try:
            data = codec.encode(record)
        except EventEncodeError:
            data = b""  # a record Avro cannot carry reaches the topic as some other bytes
        messages.append(_mutate(data, mutation))
    return messages


def _consistent_card(state: dict) -> None:
    card = CardState.from_dict(state)
    columns = (card.times, card.amounts, card.tx_ids, card.terminals, card.zscores, card.new_terminals)
    assert len({len(column) for column in columns}) == 1
    assert card.times == sorted(card.times) and len(set(card.tx_ids)) == len(card.tx_ids)
    assert all(math.isfinite(value) for value in card.amounts + card.zscores + card.archive)
    assert sum(card.terminal_uses.values()) >= len(card.terminals)


@FUZZ
@given(
    wire=st.sampled_from(sorted(TRANSACTION_CODECS)),
    batch=st.lists(st.tuples(TRANSACTIONS, MUTATIONS), min_size=3, max_size=6),
    repeat=st.booleans(),
)
def test_transactions_are_scored_or_rejected_with_a_reason_and_state_stays_consistent(wire, batch, repeat):
    codec = TRANSACTION_CODECS[wire]
    messages = _messages(codec, batch)
    if repeat:  # a duplicate delivery, out of order
        messages = messages[::-1] + messages[:1]
    valid, rejects = decode_valid(messages, codec, lambda record: validate_transaction(record, now_ms=NOW_MS))
    assert len(valid) + len(rejects) == len(messages)
    assert all(reject.reason and reject.message for reject in rejects)
    event(f"{'some' if valid else 'no'} valid transactions")
    for reject in rejects:
        event(f"rejected: {reject.reason}")
    for record in valid:
        assert math.isfinite(record["amount"]) and 0 <= record["amount"] <= 1e9
        assert 0 < len(record["card_id"]) <= 128

    cards: dict = {}
    terminals: dict = {}
    enriched = apply_card_stage(valid, cards)
    before = copy.deepcopy(cards)
    outcome = apply_terminal_stage([{"transaction": item, "feedback": None} for item in enriched], terminals, 7)
    assert cards == before  # the terminal stage never touches card state
    assert len(outcome.transactions) == len(valid)
    inputs = outcome.inputs
    assert all(math.isfinite(value) for value in inputs.features.reshape(-1).tolist())
    assert all(math.isfinite(value) for value in inputs.sequences.reshape(-1).tolist())
    for state in cards.values():
        _consistent_card(state)
    for state in terminals.values():
        terminal = TerminalState.from_dict(state)
        assert terminal.times == sorted(terminal.times) and len(set(terminal.tx_ids)) == len(terminal.tx_ids)


@FUZZ
@given(
    batch=st.lists(st.tuples(FEEDBACK, MUTATIONS), min_size=1, max_size=6),
)
def test_labels_are_applied_or_rejected_with_a_reason(batch):
    valid, rejects = decode_valid(_messages(FEEDBACK_CODEC, batch), FEEDBACK_CODEC, validate_feedback)
    assert all(reject.reason and reject.message for reject in rejects)
    terminals: dict = {}
    routable = [{"transaction": None, "feedback": label} for label in valid if label.get("terminal_id")]
    outcome = apply_terminal_stage(routable, terminals, 7)
    assert outcome.labels_applied + outcome.labels_pending == len(routable)
    for state in terminals.values():
        terminal = TerminalState.from_dict(state)
        assert not terminal.labels and len(terminal.pending) <= len(routable)  # no transaction yet: all wait
