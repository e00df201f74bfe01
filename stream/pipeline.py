"""What the worker's agents do, as plain functions over decoded records and dict-like tables.

The agents in :mod:`stream.app` only move batches between topics and call these; the functions are tested
on plain dicts, and the same :mod:`models.features` steps run here as in offline training.

    ingest (decode, validate) → card stage (card state, in the card's own order) → terminal stage
    (labels, terminal state, model, explanation) → decisions and alerts

The card stage comes first because the card windows include the transaction itself and need each card's
events in order; the terminal windows only read transactions older than the label delay, so the
interleaving that re-keying by terminal causes cannot change them.
"""

from __future__ import annotations

import gc
import logging
import struct
import time
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Protocol, TypeVar

import numpy as np
from scipy.special import expit

from explain import DEFAULT_TOLERANCE, Explainer, Explanation, check_additivity
from models.features import DAY, FEATURE_NAMES, SEQUENCE_LENGTH, SEQUENCE_STEP, CardState, TerminalState, card_step, feature_vector, terminal_step
from models.network import ModelInputs, logit_threshold
from models.registry import ModelArtifact
from stream.codec import AvroCodec
from stream.exceptions import EventDecodeError

logger = logging.getLogger(__name__)

Record = dict[str, Any]
StateTable = MutableMapping[bytes, Any]


class _Savable(Protocol):
    def to_dict(self) -> dict: ...


State = TypeVar("State", bound=_Savable)


@dataclass(frozen=True)
class Reject:
    """An input message that cannot be processed, bound for the dead-letter topic."""

    raw: bytes
    reason: str
    message: str
    field: str | None = None  #: the field that failed validation, when one did
    position: int = 0  #: its place in the batch it came in, to find the Kafka message it was


def collect_cycles_less_often() -> None:
    """Run Python's cycle collector after 50,000 net allocations instead of 700.

    Each young collection, and every few hundred a full one, walks objects that include every card's and
    terminal's state held in the tables: 3.8 s of a 20,000-transaction run went to it, and the cost grows with
    the state. The states are plain dicts and lists, freed by reference counting; the cycles that asyncio and
    the Kafka clients make are still collected, a little later (0.4 s in the same run).
    """
    gc.set_threshold(50_000, 20, 100)


def decode_valid(
    raws: Iterable[bytes | None], codec: AvroCodec, validate: Callable[[Record], None]
) -> tuple[list[Record], list[Reject]]:
    """Decode and validate a batch; bad messages become :class:`Reject` and the rest go on."""
    valid: list[Record] = []
    rejects: list[Reject] = []
    for position, raw in enumerate(raws):
        if raw is None:
            rejects.append(Reject(b"", "empty", "message has no value", position=position))
            continue
        try:
            record = codec.decode(raw)
            validate(record)
        except EventDecodeError as error:
            rejects.append(Reject(raw, error.reason, str(error), getattr(error, "field", None), position))
            continue
        valid.append(record)
    return valid, rejects


def _state_key(identifier: str) -> bytes:
    return identifier.encode()


class _BatchStates(Generic[State]):
    """The states one batch touches, each read from its table once and written back once.

    A table write is a changelog message holding the whole state, so writing it once per event would send
    the same card or terminal several times a batch.
    """

    def __init__(self, table: StateTable, load: Callable[[Any], State]) -> None:
        self._table = table
        self._load = load
        self._states: dict[bytes, State] = {}

    def __getitem__(self, identifier: str) -> State:
        key = _state_key(identifier)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = self._load(self._table.get(key))
        return state

    def write_back(self) -> None:
        for key, state in self._states.items():
            self._table[key] = state.to_dict()


def enriched_transaction(transaction: Record, card_features: Sequence[float], card_sequence: Sequence[float]) -> Record:
    """An ``EnrichedTransaction`` record: the card reading packed as the terminal stage reads it (float64 features,
    float32 sequence, little-endian), which encodes and decodes several times faster than arrays of doubles."""
    return {
        "transaction": transaction,
        "card_features": struct.pack(f"<{len(card_features)}d", *card_features),
        "card_sequence": np.asarray(card_sequence, dtype="<f4").tobytes(),  # rounded as the model's input always was
    }


def card_features_of(enriched: Record) -> tuple[float, ...]:
    """The card features an :func:`enriched_transaction` carries, exactly as the card stage read them."""
    packed = enriched["card_features"]
    return struct.unpack(f"<{len(packed) // 8}d", packed)


def apply_card_stage(transactions: Iterable[Record], table: StateTable) -> list[Record]:
    """Card features and recent sequence of each transaction, in order, updating the card's state: enriched
    transactions. Each card's state is read and written once per batch (:class:`_BatchStates`)."""
    enriched = []
    states = _BatchStates(table, CardState.from_dict)
    for transaction in transactions:
        state = states[transaction["card_id"]]
        reading = card_step(
            state, transaction["event_time"] / 1000.0, transaction["amount"], transaction["tx_id"], transaction["terminal_id"]
        )
        enriched.append(enriched_transaction(transaction, reading.features, reading.sequence))
    states.write_back()
    return enriched


def terminal_event(transaction: Record | None = None, feedback: Record | None = None) -> Record:
    """A ``TerminalEvent`` record holding one enriched transaction or one label, its union branch named.

    Naming the branch (fastavro's tuple notation) spares the encoder from validating the whole record
    against each branch to pick one, which was half the cost of encoding it.
    """
    return {
        "transaction": None if transaction is None else ("riskstream.EnrichedTransaction", transaction),
        "feedback": None if feedback is None else ("riskstream.Feedback", feedback),
    }


def terminal_of(event: Record) -> str:
    """The terminal a :func:`terminal_event` belongs to, whose partition it travels on: its transaction's or its label's."""
    if event["transaction"] is not None:
        return event["transaction"][1]["transaction"]["terminal_id"]
    return event["feedback"][1]["terminal_id"]


@dataclass
class TerminalOutcome:
    """What a batch of terminal events produced: scored rows and label bookkeeping."""

    transactions: list[Record] = field(default_factory=list)
    features: list[list[float]] = field(default_factory=list)
    sequences: list[bytes] = field(default_factory=list)
    """Packed float32, as :func:`enriched_transaction` carries them."""
    labels_applied: int = 0
    """Labels applied to their transaction's terminal, those that waited for it (``labels_pending``) included."""
    labels_pending: int = 0
    late: int = 0
    """Transactions that reached their terminal after one more than the label delay newer: the terminal features
    of those scored before them missed them (card partitions days apart: a replay at full speed, a worker far
    behind)."""

    @property
    def inputs(self) -> ModelInputs:
        """The model inputs, one row per transaction: features in ``FEATURE_NAMES`` order and card sequences."""
        return ModelInputs(
            np.asarray(self.features, dtype=np.float64).reshape(-1, len(FEATURE_NAMES)),
            np.frombuffer(b"".join(self.sequences), dtype="<f4").astype(np.float32).reshape(-1, SEQUENCE_LENGTH, len(SEQUENCE_STEP)),
        )


def apply_terminal_stage(events: Iterable[Record], table: StateTable, label_delay_days: float) -> TerminalOutcome:
    """Run terminal events in order: a label updates the terminal's risk (or waits for its transaction);
    a transaction gets its terminal features, then is recorded (features first, as in offline replay)."""
    outcome = TerminalOutcome()
    states = _BatchStates(table, TerminalState.from_dict)  # read and written once per batch, as in the card stage
    for event in events:
        enriched = event.get("transaction")
        feedback = event.get("feedback")
        if feedback is not None:
            state = states[feedback["terminal_id"]]
            if state.label(feedback["tx_id"], bool(feedback["is_fraud"]), feedback["reported_at"] / 1000.0):
                outcome.labels_applied += 1
            else:
                outcome.labels_pending += 1
        elif enriched is not None:
            transaction = enriched["transaction"]
            state = states[transaction["terminal_id"]]
            seconds = transaction["event_time"] / 1000.0
            if state.times and state.times[-1] - seconds > label_delay_days * DAY and transaction["tx_id"] not in state.tx_ids:
                outcome.late += 1  # a redelivery changes nothing and is not late
            if state.pending:  # labels that arrived first: the transaction's update applies them
                outcome.labels_applied += sum(entry[0] == transaction["tx_id"] for entry in state.pending)
            card = card_features_of(enriched)
            terminal = terminal_step(state, seconds, transaction["tx_id"], transaction["amount"], card, label_delay_days)
            outcome.transactions.append(transaction)
            outcome.features.append(feature_vector(seconds, transaction["amount"], card, terminal))
            outcome.sequences.append(enriched["card_sequence"])
    states.write_back()
    return outcome


@dataclass
class ScoredBatch:
    """A batch's decisions (one per transaction) and alerts (those at or above the threshold)."""

    decisions: list[Record]
    alerts: list[Record]
    flagged: int = 0


class Scorer:
    """Scores a batch with one model call and explains only the alerts, in one more call.

    A transaction alerts when its logit is at or above the threshold: the model's, or one given as a probability
    (``threshold``, see :func:`models.network.logit_threshold`) or as a logit (``threshold_logit``).

    ``tokenize`` (e.g. :class:`stream.privacy.Tokenizer`) replaces the card id in every decision and alert,
    so no raw card id leaves the worker.
    """

    def __init__(
        self,
        artifact: ModelArtifact,
        explainer: Explainer,
        threshold: float | None = None,
        top_reasons: int = 5,
        tolerance: float = DEFAULT_TOLERANCE,
        *,
        tokenize: Callable[[str], str],
        threshold_logit: float | None = None,
    ) -> None:
        self.tokenize = tokenize
        self.artifact = artifact
        self.explainer = explainer
        if threshold is not None and threshold_logit is not None:
            raise ValueError("give the alert threshold as a probability or as a logit, not both")
        if threshold_logit is None:
            threshold_logit = artifact.threshold_logit if threshold is None else logit_threshold(threshold)
        self.threshold_logit = float(threshold_logit)
        self.threshold = float(expit(self.threshold_logit))
        self.top_reasons = top_reasons
        self.tolerance = tolerance

    def score(self, transactions: list[Record], inputs: ModelInputs, now_ms: int | None = None) -> ScoredBatch:
        """Decisions for every transaction and alerts (with reasons) for those at or above the threshold."""
        decided_at = int(time.time() * 1000) if now_ms is None else now_ms
        if not transactions:
            return ScoredBatch([], [])
        features = inputs.features
        sequences = inputs.sequences.reshape(len(transactions), -1)  # float32, stored whole for retraining and replay
        head_inputs = self.artifact.head_inputs(inputs)
        logits = self.artifact.score_head(head_inputs)
        scores = expit(logits)
        alert_rows = np.flatnonzero(logits >= self.threshold_logit)  # a score can saturate at 1, its logit cannot
        explanations, flagged = self._explain(transactions, alert_rows, features, head_inputs, logits)
        batch = ScoredBatch([], [], flagged=len(flagged))
        # Plain Python numbers in one conversion per array: per-row numpy indexing costs more than the row.
        for row, (transaction, score, logit, values, sequence) in enumerate(
            zip(transactions, scores.tolist(), logits.tolist(), features.tolist(), sequences.tolist())
        ):
            decision = {
                "tx_id": transaction["tx_id"],
                "event_time": transaction["event_time"],
                "card_id": self.tokenize(transaction["card_id"]),
                "terminal_id": transaction["terminal_id"],
                "amount": transaction["amount"],
                "score": score,
                "score_logit": logit,
                "threshold": self.threshold,
                "threshold_logit": self.threshold_logit,
                "is_alert": row in explanations,
                "model_version": self.artifact.version,
                "decided_at": decided_at,
                "features": values,  # in artifact.feature_names order
                "sequence": sequence,
                "base_value": None,
                "additivity_gap": None,
                "explanation_flagged": row in flagged,
                "reasons": [],
            }
            if row in explanations:
                explanation = explanations[row]
                if explanation is not None:
                    reasons = explanation.records()
                    decision.update(base_value=explanation.base_value, additivity_gap=explanation.additivity_gap, reasons=reasons)
                batch.alerts.append(
                    {
                        key: decision[key]
                        for key in ("tx_id", "event_time", "card_id", "terminal_id", "amount", "score", "score_logit",
                                    "threshold", "threshold_logit", "model_version", "decided_at", "base_value",
                                    "additivity_gap", "explanation_flagged")
                    }
                    | {"explanation_space": "log-odds", "reasons": decision["reasons"][: self.top_reasons]}
                )
            batch.decisions.append(decision)
        return batch

    def _explain(
        self, transactions: list[Record], rows: np.ndarray, features: np.ndarray, head_inputs: np.ndarray, logits: np.ndarray
    ) -> tuple[dict[int, Explanation | None], set[int]]:
        """Explanations of the alert rows (None where explaining failed) and the rows to flag.

        A failing explainer or a gap above the tolerance flags the alert, which is still sent: the worker
        keeps scoring, and the flag, a counter and a log line say the reasons cannot be trusted.
        """
        if not rows.size:
            return {}, set()
        try:
            explained = self.explainer.explain(head_inputs[rows], features[rows], logits[rows])
        except Exception:
            logger.exception("explaining %d alert(s) failed; they are sent flagged, without reasons", rows.size)
            return dict.fromkeys(rows.tolist()), set(rows.tolist())
        flagged = set()
        for index in check_additivity(explained, self.tolerance):
            row = int(rows[index])
            flagged.add(row)
            logger.warning("explanation gap %.3g above tolerance %g x max(1, |logit|) for tx %s",
                           explained[index].additivity_gap, self.tolerance, transactions[row]["tx_id"])
        return dict(zip(rows.tolist(), explained)), flagged


__all__ = [
    "Reject",
    "ScoredBatch",
    "Scorer",
    "TerminalOutcome",
    "apply_card_stage",
    "apply_terminal_stage",
    "card_features_of",
    "collect_cycles_less_often",
    "decode_valid",
    "enriched_transaction",
    "terminal_event",
    "terminal_of",
]
