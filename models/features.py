"""Behaviour features computed incrementally from per-card and per-terminal state.

The streaming worker and the offline trainer both call the functions here, in the same order, so a
model is trained on exactly the feature values it will see when scoring. For every transaction the
features are read from the state as it was *before* the transaction (the handbook's card windows
still include the transaction itself), then the state is updated.

Terminal risk uses fraud labels, which arrive late (chargebacks, analyst verdicts). A label enters the
terminal's state only when its feedback event arrives, and counts only for transactions at least
``label_delay_days`` old, so no feature ever reads a label that could not be known at scoring time.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

DAY = 86_400.0
WINDOWS_DAYS = (1, 7, 30)
DEFAULT_LABEL_DELAY_DAYS = 7


@dataclass(frozen=True)
class Feature:
    """One model input: its column name, and how an analyst reads it (``{value}`` is filled in)."""

    name: str
    reason: str


def _card_features() -> list[Feature]:
    features = []
    for days in WINDOWS_DAYS:
        features.append(Feature(f"card_tx_count_{days}d", f"card made {{value:.0f}} transactions in the last {days} day(s)"))
        features.append(Feature(f"card_avg_amount_{days}d", f"card's average amount over {days} day(s) is {{value:.2f}}"))
    return features


def _terminal_features() -> list[Feature]:
    features = []
    for days in WINDOWS_DAYS:
        features.append(Feature(f"terminal_tx_count_{days}d", f"terminal had {{value:.0f}} transactions in the {days} day(s) before the label delay"))
        features.append(Feature(f"terminal_fraud_rate_{days}d", f"{{value:.1%}} of the terminal's transactions in the {days} day(s) before the label delay were confirmed fraud"))
    return features


FEATURES: tuple[Feature, ...] = (
    Feature("amount", "amount is {value:.2f}"),
    Feature("is_weekend", "made at the weekend ({value:.0f})"),
    Feature("is_night", "made at night, before 07:00 ({value:.0f})"),
    *_card_features(),
    *_terminal_features(),
)
FEATURE_NAMES: tuple[str, ...] = tuple(feature.name for feature in FEATURES)
N_CARD_FEATURES = 2 * len(WINDOWS_DAYS)
N_TERMINAL_FEATURES = 2 * len(WINDOWS_DAYS)


def _count_in(times: list[float], lo: float, hi: float) -> int:
    """Number of sorted ``times`` in the half-open interval (lo, hi]."""
    return bisect_right(times, hi) - bisect_right(times, lo)


class CardState:
    """A card's recent transactions (event time in epoch seconds, amount, tx_id), sorted by time.

    The tx_ids make a redelivered transaction (at-least-once processing after a crash) recognisable, so it
    is never counted twice.

    >>> state = CardState()
    >>> card_step(state, 0.0, 10.0, "a")[:2]
    [1.0, 10.0]
    >>> card_step(state, 3_600.0, 30.0, "b")[:2]
    [2.0, 20.0]
    >>> card_step(state, 3_600.0, 30.0, "b")[:2]  # delivered again: same features, state unchanged
    [2.0, 20.0]
    """

    __slots__ = ("times", "amounts", "tx_ids")

    def __init__(self, times: list[float] | None = None, amounts: list[float] | None = None, tx_ids: list[str] | None = None) -> None:
        self.times: list[float] = times if times is not None else []
        self.amounts: list[float] = amounts if amounts is not None else []
        self.tx_ids: list[str] = tx_ids if tx_ids is not None else []

    def features(self, time: float, amount: float) -> list[float]:
        """Count and average amount per window, ending at ``time`` and including this transaction."""
        hi = bisect_right(self.times, time)
        values = []
        for days in WINDOWS_DAYS:
            lo = bisect_right(self.times, time - days * DAY)
            count = hi - lo + 1
            values.append(float(count))
            values.append((math.fsum(self.amounts[lo:hi]) + amount) / count)
        return values

    def without(self, tx_id: str) -> CardState:
        """A copy without one transaction: the state as a redelivered transaction first saw it."""
        index = self.tx_ids.index(tx_id)
        return CardState(
            self.times[:index] + self.times[index + 1 :],
            self.amounts[:index] + self.amounts[index + 1 :],
            self.tx_ids[:index] + self.tx_ids[index + 1 :],
        )

    def update(self, time: float, amount: float, tx_id: str) -> None:
        """Record a transaction (late ones are inserted in time order) and forget what no window needs."""
        index = bisect_right(self.times, time)
        self.times.insert(index, time)
        self.amounts.insert(index, amount)
        self.tx_ids.insert(index, tx_id)
        horizon = self.times[-1] - max(WINDOWS_DAYS) * DAY
        drop = bisect_right(self.times, horizon)
        if drop:
            del self.times[:drop]
            del self.amounts[:drop]
            del self.tx_ids[:drop]

    def to_dict(self) -> dict[str, Any]:
        return {"times": self.times, "amounts": self.amounts, "tx_ids": self.tx_ids}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CardState:
        if not data:
            return cls()
        return cls(list(data["times"]), list(data["amounts"]), list(data["tx_ids"]))


class TerminalState:
    """A terminal's recent transactions and the fraud labels that have arrived for them.

    A fraud label counts in a window once its transaction is ``label_delay_days`` old *and* the label had
    been reported by the time of the transaction being scored, so the result does not depend on the order in
    which labels and transactions happen to be processed. A label for a transaction the terminal has not seen
    yet waits (``pending``) until the transaction arrives.

    >>> state = TerminalState()
    >>> state.update(0.0, "t1")
    >>> state.label("t1", True, reported=7 * DAY)
    True
    >>> state.features(7.5 * DAY, label_delay_days=7)[:2]
    [1.0, 1.0]
    >>> state.features(0.5 * DAY, label_delay_days=0)[:2]  # the label was reported later than this
    [1.0, 0.0]
    """

    __slots__ = ("times", "tx_ids", "labels", "pending")

    def __init__(
        self,
        times: list[float] | None = None,
        tx_ids: list[str] | None = None,
        labels: list[list[Any]] | None = None,
        pending: list[list[Any]] | None = None,
    ) -> None:
        self.times: list[float] = times if times is not None else []
        self.tx_ids: list[str] = tx_ids if tx_ids is not None else []
        # [transaction time, reported time, tx_id, is_fraud]: the latest verdict per transaction, by time
        self.labels: list[list[Any]] = labels if labels is not None else []
        # [tx_id, is_fraud, reported time] of labels whose transaction has not arrived yet
        self.pending: list[list[Any]] = pending if pending is not None else []

    def features(self, time: float, label_delay_days: float = DEFAULT_LABEL_DELAY_DAYS) -> list[float]:
        """Transaction count and confirmed-fraud share per window, shifted back by the label delay."""
        hi = time - label_delay_days * DAY
        fraud_times = [label[0] for label in self.labels if label[3] and label[1] <= time] if self.labels else []
        values = []
        for days in WINDOWS_DAYS:
            lo = hi - days * DAY
            count = _count_in(self.times, lo, hi)
            frauds = _count_in(fraud_times, lo, hi)
            values.append(float(count))
            values.append(frauds / count if count else 0.0)
        return values

    def update(self, time: float, tx_id: str, label_delay_days: float = DEFAULT_LABEL_DELAY_DAYS) -> None:
        """Record a transaction (a repeat of a known tx_id changes nothing) and forget what no window needs."""
        if tx_id in self.tx_ids:
            return
        index = bisect_right(self.times, time)
        self.times.insert(index, time)
        self.tx_ids.insert(index, tx_id)
        if self.pending:
            for waiting in [entry for entry in self.pending if entry[0] == tx_id]:
                self.pending.remove(waiting)
                self.label(tx_id, waiting[1], waiting[2])
        horizon = self.times[-1] - (max(WINDOWS_DAYS) + label_delay_days) * DAY
        drop = bisect_right(self.times, horizon)
        if drop:
            del self.times[:drop]
            del self.tx_ids[:drop]
            self.labels = [label for label in self.labels if label[0] > horizon]
        if self.pending:
            self.pending = [entry for entry in self.pending if entry[2] > horizon]

    def label(self, tx_id: str, is_fraud: bool, reported: float) -> bool:
        """Apply a label reported at ``reported`` (epoch seconds); the latest report for a transaction wins.

        Returns False when the transaction is not in this terminal's history: the label then waits for it.
        """
        try:
            position = self.tx_ids.index(tx_id)
        except ValueError:
            self.pending = [entry for entry in self.pending if entry[0] != tx_id or entry[2] > reported]
            if not any(entry[0] == tx_id for entry in self.pending):
                self.pending.append([tx_id, bool(is_fraud), reported])
            return False
        known = [label for label in self.labels if label[2] == tx_id]
        if known and known[0][1] > reported:
            return True
        self.labels = [label for label in self.labels if label[2] != tx_id]
        time = self.times[position]
        index = bisect_right([label[0] for label in self.labels], time)
        self.labels.insert(index, [time, reported, tx_id, bool(is_fraud)])
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"times": self.times, "tx_ids": self.tx_ids, "labels": self.labels, "pending": self.pending}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TerminalState:
        if not data:
            return cls()
        return cls(list(data["times"]), list(data["tx_ids"]), [list(label) for label in data["labels"]], [list(p) for p in data["pending"]])


def card_step(state: CardState, time: float, amount: float, tx_id: str) -> list[float]:
    """Card features of a transaction, then the transaction recorded: the one order both paths use.

    A transaction the card has already recorded (a redelivery) gets the features it had the first time and
    changes nothing.
    """
    if tx_id in state.tx_ids:
        return state.without(tx_id).features(time, amount)
    values = state.features(time, amount)
    state.update(time, amount, tx_id)
    return values


def terminal_step(state: TerminalState, time: float, tx_id: str, label_delay_days: float) -> list[float]:
    """Terminal features of a transaction, then the transaction recorded: the one order both paths use."""
    values = state.features(time, label_delay_days)
    state.update(time, tx_id, label_delay_days)
    return values


def calendar_features(time: float) -> list[float]:
    """Weekend (Saturday/Sunday) and night (hour 0-6) flags of an epoch time, read in UTC."""
    moment = datetime.fromtimestamp(time, tz=timezone.utc)
    return [float(moment.weekday() >= 5), float(moment.hour <= 6)]


def feature_vector(time: float, amount: float, card: list[float], terminal: list[float]) -> list[float]:
    """The model's input row, in ``FEATURE_NAMES`` order."""
    return [amount, *calendar_features(time), *card, *terminal]


__all__ = [
    "DAY",
    "DEFAULT_LABEL_DELAY_DAYS",
    "FEATURES",
    "FEATURE_NAMES",
    "CardState",
    "Feature",
    "TerminalState",
    "calendar_features",
    "card_step",
    "feature_vector",
    "terminal_step",
]
