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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

DAY = 86_400.0
HOUR = 3_600.0
WINDOWS_DAYS = (1, 7, 30)
DEFAULT_LABEL_DELAY_DAYS = 7
SEQUENCE_LENGTH = 8
"""Transactions in the card's recent sequence that the learned summary reads (this one included)."""
SEQUENCE_STEP = ("present", "amount_zscore", "hours_since_previous", "new_terminal")
"""What each step of the sequence holds; ``present`` is 0 for the padding of a card with a short history."""
UNUSUAL_ZSCORE = 3.0
UNUSUAL_WINDOW_DAYS = 14
RECENT_FRAUD_DAYS = 28
_NO_HISTORY_DAYS = 60.0
MIN_USUAL_AMOUNT = 0.01
"""A card's usual amount (mean, 30-day maximum) below this, one cent, makes no ratio: the ratio reads 1."""


@dataclass(frozen=True)
class Feature:
    """One model input: its column name, and how an analyst reads it (``{value}`` is filled in)."""

    name: str
    reason: str


def _card_window_features() -> list[Feature]:
    features = []
    for days in WINDOWS_DAYS:
        features.append(Feature(f"card_tx_count_{days}d", f"card made {{value:.0f}} transactions in the last {days} day(s)"))
        features.append(Feature(f"card_avg_amount_{days}d", f"card's average amount over {days} day(s) is {{value:.2f}}"))
    return features


CARD_BEHAVIOUR_FEATURES = (
    Feature("card_amount_vs_mean", "amount is {value:.1f}× this card's average"),
    Feature("card_amount_zscore", "amount is {value:.1f} standard deviations from this card's usual"),
    Feature("card_amount_vs_max_30d", "amount is {value:.1f}× the card's largest in 30 days"),
    Feature("card_hours_since_previous", "{value:.1f} hours since the card's previous transaction"),
    Feature("card_tx_count_1h", "card made {value:.0f} transactions within the hour"),
    Feature("card_new_terminal", "first use of this terminal by this card ({value:.0f})"),
    Feature("card_unusual_share_14d", "{value:.0%} of the card's transactions in 14 days had unusual amounts"),
    Feature("card_history_count", "card has {value:.0f} earlier transactions"),
)


def _terminal_window_features() -> list[Feature]:
    features = []
    for days in WINDOWS_DAYS:
        features.append(Feature(f"terminal_tx_count_{days}d", f"terminal had {{value:.0f}} transactions in the {days} day(s) before the label delay"))
        features.append(Feature(f"terminal_fraud_rate_{days}d", f"{{value:.1%}} of the terminal's transactions in the {days} day(s) before the label delay were confirmed fraud"))
    return features


TERMINAL_BEHAVIOUR_FEATURES = (
    Feature("terminal_known_frauds_28d", "terminal had {value:.0f} confirmed frauds in the last 28 days"),
    Feature("terminal_days_since_last_fraud", "{value:.1f} days since the terminal's latest confirmed fraud"),
    Feature("terminal_fraud_streak", "terminal's latest {value:.0f} confirmed transactions in a row were fraud"),
    Feature("terminal_days_since_streak_start", "{value:.0f} calendar days since the terminal's run of confirmed frauds began"),
    Feature("terminal_streak_share", "{value:.0%} of the terminal's transactions since that run began were confirmed fraud"),
    Feature("terminal_last_fraud_amount", "the terminal's latest confirmed fraud was for {value:.2f}"),
    Feature("terminal_last_fraud_zscore", "the terminal's latest confirmed fraud was {value:.1f} standard deviations from its card's usual amount"),
)

FEATURES: tuple[Feature, ...] = (
    Feature("amount", "amount is {value:.2f}"),
    Feature("is_weekend", "made at the weekend ({value:.0f})"),
    Feature("is_night", "made at night, before 07:00 ({value:.0f})"),
    *_card_window_features(),
    *CARD_BEHAVIOUR_FEATURES,
    *_terminal_window_features(),
    *TERMINAL_BEHAVIOUR_FEATURES,
)
FEATURE_NAMES: tuple[str, ...] = tuple(feature.name for feature in FEATURES)
_BEHAVIOUR_NAMES = {feature.name for feature in CARD_BEHAVIOUR_FEATURES + TERMINAL_BEHAVIOUR_FEATURES}
BASELINE_FEATURE_NAMES: tuple[str, ...] = tuple(name for name in FEATURE_NAMES if name not in _BEHAVIOUR_NAMES)
"""The handbook's 15 baseline features, a subset of :data:`FEATURE_NAMES`."""
_CARD_NAMES = [feature.name for feature in _card_window_features() + list(CARD_BEHAVIOUR_FEATURES)]
_ZSCORE, _NEW_TERMINAL = _CARD_NAMES.index("card_amount_zscore"), _CARD_NAMES.index("card_new_terminal")


def _count_in(times: list[float], lo: float, hi: float) -> int:
    """Number of sorted ``times`` in the half-open interval (lo, hi]."""
    return bisect_right(times, hi) - bisect_right(times, lo)


class CardReading(NamedTuple):
    """What the card stage reads for one transaction: named card features and the recent sequence."""

    features: list[float]
    sequence: list[float]
    """``SEQUENCE_LENGTH`` steps of ``SEQUENCE_STEP``, oldest first, flattened."""


class CardState:
    """A card's behaviour: its last 30 days transaction by transaction, and a summary of everything older.

    Per transaction in the window: event time (epoch seconds), amount, tx_id, terminal, and two readings taken
    when it happened (its amount z-score against the card's history, whether its terminal was new to the card).
    Older transactions are folded into a count, a sum and a sum of squares of amounts, so the card's usual
    spending is known from its whole history in constant space. The tx_ids make a redelivered transaction
    (at-least-once processing after a crash) recognisable, so it is never counted twice.

    >>> state = CardState()
    >>> card_step(state, 0.0, 10.0, "a", "t1").features[:2]
    [1.0, 10.0]
    >>> card_step(state, 3_600.0, 30.0, "b", "t1").features[:2]
    [2.0, 20.0]
    >>> card_step(state, 3_600.0, 30.0, "b", "t1").features[:2]  # delivered again: same features, state unchanged
    [2.0, 20.0]
    """

    __slots__ = ("times", "amounts", "tx_ids", "terminals", "zscores", "new_terminals", "archive", "terminal_uses")

    def __init__(
        self,
        times: list[float] | None = None,
        amounts: list[float] | None = None,
        tx_ids: list[str] | None = None,
        terminals: list[str] | None = None,
        zscores: list[float] | None = None,
        new_terminals: list[float] | None = None,
        archive: list[float] | None = None,
        terminal_uses: dict[str, int] | None = None,
    ) -> None:
        self.times: list[float] = times if times is not None else []
        self.amounts: list[float] = amounts if amounts is not None else []
        self.tx_ids: list[str] = tx_ids if tx_ids is not None else []
        self.terminals: list[str] = terminals if terminals is not None else []
        self.zscores: list[float] = zscores if zscores is not None else []
        self.new_terminals: list[float] = new_terminals if new_terminals is not None else []
        # count, sum of amounts and sum of squared amounts of the transactions that left the window
        self.archive: list[float] = archive if archive is not None else [0.0, 0.0, 0.0]
        # how many times each terminal was used by the card, over its whole history
        self.terminal_uses: dict[str, int] = terminal_uses if terminal_uses is not None else {}

    def _usual_amount(self, hi: int) -> tuple[float, float, float]:
        """Count, mean and standard deviation of every amount the card spent before window position ``hi``."""
        count = self.archive[0] + hi
        if not count:
            return 0.0, 0.0, 0.0
        total = self.archive[1] + math.fsum(self.amounts[:hi])
        squares = self.archive[2] + math.fsum(amount * amount for amount in self.amounts[:hi])
        mean = total / count
        return count, mean, math.sqrt(max(squares / count - mean * mean, 0.0))

    def _used_before(self, terminal_id: str, hi: int) -> bool:
        """Whether the card used the terminal before window position ``hi`` (uses after it do not count)."""
        return self.terminal_uses.get(terminal_id, 0) > self.terminals[hi:].count(terminal_id)

    def read(self, time: float, amount: float, terminal_id: str) -> CardReading:
        """Card features and sequence of a transaction at ``time``, from the state before it is recorded.

        Only transactions before ``time`` are read, so a late or redelivered transaction sees what it would
        have seen on time.
        """
        hi = bisect_right(self.times, time)
        values = []
        for days in WINDOWS_DAYS:  # the last, the longest, leaves ``lo`` at the start of the 30-day window
            lo = bisect_right(self.times, time - days * DAY)
            count = hi - lo + 1
            values.append(float(count))
            values.append((math.fsum(self.amounts[lo:hi]) + amount) / count)
        history, mean, std = self._usual_amount(hi)
        zscore = _zscore(amount, mean, std, history)
        recent = self.amounts[lo:hi]
        previous = self.times[hi - 1] if hi else None
        since = bisect_right(self.times, time - UNUSUAL_WINDOW_DAYS * DAY)
        unusual = sum(1 for z in self.zscores[since:hi] if z >= UNUSUAL_ZSCORE) + (zscore >= UNUSUAL_ZSCORE)
        new_terminal = float(not self._used_before(terminal_id, hi))
        values += [
            _ratio(amount, mean),
            zscore,
            _ratio(amount, max(recent) if recent else 0.0),
            (time - previous) / HOUR if previous is not None else _NO_HISTORY_DAYS * 24.0,
            float(hi - bisect_right(self.times, time - HOUR) + 1),
            new_terminal,
            unusual / (hi - since + 1),
            history,
        ]
        return CardReading(values, self._sequence(hi, time, zscore, new_terminal))

    def _sequence(self, hi: int, time: float, zscore: float, new_terminal: float) -> list[float]:
        """The last ``SEQUENCE_LENGTH`` steps ending with this transaction, zero-padded in front."""
        first = max(0, hi - SEQUENCE_LENGTH + 1)
        times = self.times[first:hi] + [time]
        zscores = self.zscores[first:hi] + [zscore]
        new = self.new_terminals[first:hi] + [new_terminal]
        steps = [0.0] * (len(SEQUENCE_STEP) * (SEQUENCE_LENGTH - len(times)))
        for index, moment in enumerate(times):
            gap = moment - times[index - 1] if index else (moment - self.times[first - 1] if first else _NO_HISTORY_DAYS * DAY)
            steps += [1.0, zscores[index], math.log1p(gap / HOUR), new[index]]
        return steps

    def without(self, tx_id: str) -> CardState:
        """A copy without one transaction: the state as a redelivered transaction first saw it."""
        index = self.tx_ids.index(tx_id)
        uses = dict(self.terminal_uses)
        terminal = self.terminals[index]
        uses[terminal] -= 1
        if not uses[terminal]:
            del uses[terminal]

        def drop(values: list) -> list:
            return values[:index] + values[index + 1 :]

        return CardState(
            drop(self.times), drop(self.amounts), drop(self.tx_ids), drop(self.terminals),
            drop(self.zscores), drop(self.new_terminals), list(self.archive), uses,
        )

    def update(self, time: float, amount: float, tx_id: str, terminal_id: str, reading: CardReading) -> None:
        """Record a transaction (late ones are inserted in time order) and fold what left the window into the archive."""
        index = bisect_right(self.times, time)
        for values, value in (
            (self.times, time), (self.amounts, amount), (self.tx_ids, tx_id), (self.terminals, terminal_id),
            (self.zscores, reading.features[_ZSCORE]), (self.new_terminals, reading.features[_NEW_TERMINAL]),
        ):
            values.insert(index, value)
        self.terminal_uses[terminal_id] = self.terminal_uses.get(terminal_id, 0) + 1
        drop = bisect_right(self.times, self.times[-1] - max(WINDOWS_DAYS) * DAY)
        if drop:
            old = self.amounts[:drop]
            self.archive = [self.archive[0] + drop, self.archive[1] + math.fsum(old), self.archive[2] + math.fsum(a * a for a in old)]
            for values in (self.times, self.amounts, self.tx_ids, self.terminals, self.zscores, self.new_terminals):
                del values[:drop]

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CardState:
        if not data:
            return cls()
        return cls(**{name: (dict(value) if isinstance(value, dict) else list(value)) for name, value in data.items()})


def _ratio(amount: float, usual: float) -> float:
    """``amount / usual``, or 1 when the usual amount is under a cent: a sub-cent history says nothing, and
    dividing by it could overflow to infinity.

    >>> _ratio(50.0, 40.0), _ratio(1.0, 5e-324), _ratio(3.0, 0.0)
    (1.25, 1.0, 1.0)
    """
    return amount / usual if usual >= MIN_USUAL_AMOUNT else 1.0


def _zscore(amount: float, mean: float, std: float, history: float) -> float:
    """How unusual ``amount`` is for the card, in standard deviations, clipped to [-5, 50].

    The spread is floored at a tenth of the mean (and 1 cent), so a card that always spends the same amount
    does not turn a small change into an enormous score; a card with no history reads 0.
    """
    if not history:
        return 0.0
    return min(max((amount - mean) / max(std, 0.1 * mean, 0.01), -5.0), 50.0)


class TerminalState:
    """A terminal's recent transactions and the fraud labels that have arrived for them.

    Per transaction: event time, tx_id, amount, and how unusual the amount was for its card (the card
    stage's z-score). A fraud label counts in a window once its transaction is ``label_delay_days`` old *and*
    the label had been reported by the time of the transaction being scored, so the result does not depend on
    the order in which labels and transactions happen to be processed. A label for a transaction the terminal
    has not seen yet waits (``pending``) until the transaction arrives.

    >>> state = TerminalState()
    >>> state.update(0.0, "t1", 250.0, 4.0)
    >>> state.label("t1", True, reported=7 * DAY)
    True
    >>> state.features(7.5 * DAY, label_delay_days=7)[:2], state.features(7.5 * DAY, label_delay_days=7)[-2:]
    ([1.0, 1.0], [250.0, 4.0])
    >>> state.features(0.5 * DAY, label_delay_days=0)[:2]  # the label was reported later than this
    [1.0, 0.0]
    """

    __slots__ = ("times", "tx_ids", "amounts", "zscores", "labels", "pending")

    def __init__(
        self,
        times: list[float] | None = None,
        tx_ids: list[str] | None = None,
        amounts: list[float] | None = None,
        zscores: list[float] | None = None,
        labels: list[list[Any]] | None = None,
        pending: list[list[Any]] | None = None,
    ) -> None:
        self.times: list[float] = times if times is not None else []
        self.tx_ids: list[str] = tx_ids if tx_ids is not None else []
        self.amounts: list[float] = amounts if amounts is not None else []
        self.zscores: list[float] = zscores if zscores is not None else []
        # [transaction time, reported time, tx_id, is_fraud, amount, amount z-score, superseded time or None]:
        # every report, by transaction time then reported time, each in force until the next one for its transaction
        self.labels: list[list[Any]] = labels if labels is not None else []
        # [tx_id, is_fraud, reported time] of reports whose transaction has not arrived yet
        self.pending: list[list[Any]] = pending if pending is not None else []

    def features(self, time: float, label_delay_days: float = DEFAULT_LABEL_DELAY_DAYS) -> list[float]:
        """Count and confirmed-fraud share per window shifted back by the label delay, then how many and how
        recent the terminal's known frauds are, and what its latest known fraud looked like.

        Every value reads only transactions older than the label delay: the stream re-keys transactions by
        terminal from many card partitions, so recent ones may be processed in any order, old ones not. And none
        reads further back than the longest window, so the history a terminal holds beyond it (see
        :meth:`update`) changes no value.
        """
        hi = time - label_delay_days * DAY
        lo = hi - max(WINDOWS_DAYS) * DAY  # the longest window: no value reads further back, however long the history
        frauds = [
            label for label in self.labels
            if label[3] and label[1] <= time and label[0] > lo and (label[6] is None or label[6] > time)
        ] if self.labels else []
        fraud_times = [label[0] for label in frauds]
        values = []
        for days in WINDOWS_DAYS:
            lo = hi - days * DAY
            count = _count_in(self.times, lo, hi)
            values.append(float(count))
            values.append(_count_in(fraud_times, lo, hi) / count if count else 0.0)
        known = bisect_right(fraud_times, hi)
        recent_frauds = _count_in(fraud_times, time - RECENT_FRAUD_DAYS * DAY, hi)
        streak, start = self._fraud_streak(fraud_times, known)
        since_start = bisect_right(self.times, hi) - bisect_left(self.times, start) if streak else 0
        latest = frauds[known - 1] if known else None
        values += [
            float(recent_frauds),
            (time - latest[0]) / DAY if latest else _NO_HISTORY_DAYS,
            float(streak),
            float(math.floor(time / DAY) - math.floor(start / DAY)) if streak else _NO_HISTORY_DAYS,
            streak / since_start if since_start else 0.0,
            latest[4] if latest else 0.0,
            latest[5] if latest else 0.0,
        ]
        return values

    def _fraud_streak(self, fraud_times: list[float], known: int) -> tuple[int, float]:
        """Length and start time of the run of consecutive known frauds that ends with the latest usable one
        (``fraud_times[known - 1]``).

        A compromised terminal turns every transaction into fraud for a while: a long run that began recently
        says it still is, a run followed by genuine transactions says it has ended.
        """
        latest = known - 1
        if latest < 0:
            return 0, 0.0
        position = bisect_right(self.times, fraud_times[latest]) - 1
        streak = 0
        while position >= 0 and latest >= 0 and self.times[position] == fraud_times[latest]:
            streak, position, latest = streak + 1, position - 1, latest - 1
        return streak, self.times[position + 1]

    def update(
        self, time: float, tx_id: str, amount: float, zscore: float, label_delay_days: float = DEFAULT_LABEL_DELAY_DAYS
    ) -> None:
        """Record a transaction (a repeat of a known tx_id changes nothing) and forget what no window needs.

        "Needs" counts from the latest transaction seen less one more label delay than the windows reach back.
        Transactions come re-keyed from many card partitions, which can be days apart in event time (a worker
        catching up after a restart, a replay at full speed): one far behind the latest still finds its windows
        whole. Features read only transactions older than the label delay, so while the partitions are less than
        a label delay apart every transaction finds what it would have in time order.
        """
        if tx_id in self.tx_ids:
            return
        index = bisect_right(self.times, time)
        for values, value in ((self.times, time), (self.tx_ids, tx_id), (self.amounts, amount), (self.zscores, zscore)):
            values.insert(index, value)
        if self.pending:
            for waiting in [entry for entry in self.pending if entry[0] == tx_id]:
                self.pending.remove(waiting)
                self.label(tx_id, waiting[1], waiting[2])
        horizon = self.times[-1] - (max(WINDOWS_DAYS) + 2 * label_delay_days) * DAY
        drop = bisect_right(self.times, horizon)
        if drop:
            for values in (self.times, self.tx_ids, self.amounts, self.zscores):
                del values[:drop]
            self.labels = [label for label in self.labels if label[0] > horizon]
        if self.pending:
            self.pending = [entry for entry in self.pending if entry[2] > horizon]

    def label(self, tx_id: str, is_fraud: bool, reported: float) -> bool:
        """Apply a label reported at ``reported`` (epoch seconds): from then until a later report for the same
        transaction, it is the verdict in force. Every report is kept with when it was superseded, so a reversal
        does not reach back before it was reported, whatever order the reports arrive in; a repeat of a report
        (same reported time) replaces it.

        Returns False when the transaction is not in this terminal's history: the report then waits for it.
        """
        try:
            position = self.tx_ids.index(tx_id)
        except ValueError:
            self.pending = [entry for entry in self.pending if entry[0] != tx_id or entry[2] != reported]
            self.pending.append([tx_id, bool(is_fraud), reported])
            return False
        reports = sorted(
            [(label[1], label[3]) for label in self.labels if label[2] == tx_id and label[1] != reported]
            + [(reported, bool(is_fraud))]
        )
        superseded = [later for later, _ in reports[1:]] + [None]
        self.labels = [label for label in self.labels if label[2] != tx_id]
        time = self.times[position]
        index = bisect_right([label[0] for label in self.labels], time)
        self.labels[index:index] = [
            [time, at, tx_id, verdict, self.amounts[position], self.zscores[position], until]
            for (at, verdict), until in zip(reports, superseded)
        ]
        return True

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TerminalState:
        """A state from :meth:`to_dict`. One written before terminals kept amounts reads them as 0, ordinary; one
        written before reports were kept with when they were superseded held only the latest report per
        transaction, never superseded (entry by entry: a worker of either version may have written last).

        >>> old = {"times": [0.0], "tx_ids": ["a"], "labels": [[0.0, 1.0, "a", True]], "pending": []}
        >>> state = TerminalState.from_dict(old)
        >>> state.amounts, state.zscores, state.labels
        ([0.0], [0.0], [[0.0, 1.0, 'a', True, 0.0, 0.0, None]])
        """
        if not data:
            return cls()
        state = cls(**{name: [list(item) if isinstance(item, list) else item for item in value] for name, value in data.items()})
        if "amounts" not in data:
            state.amounts, state.zscores = [0.0] * len(state.times), [0.0] * len(state.times)
            state.labels = [label + [0.0, 0.0] for label in state.labels]
        state.labels = [label + [None] if len(label) == 6 else label for label in state.labels]  # mixed in a rolling upgrade
        return state


def card_step(state: CardState, time: float, amount: float, tx_id: str, terminal_id: str) -> CardReading:
    """Card reading of a transaction, then the transaction recorded: the one order both paths use.

    A transaction the card has already recorded (a redelivery) gets the reading it had the first time and
    changes nothing.
    """
    if tx_id in state.tx_ids:
        return state.without(tx_id).read(time, amount, terminal_id)
    reading = state.read(time, amount, terminal_id)
    state.update(time, amount, tx_id, terminal_id, reading)
    return reading


def terminal_step(state: TerminalState, time: float, tx_id: str, amount: float, card: Sequence[float], label_delay_days: float) -> list[float]:
    """Terminal features of a transaction, then the transaction recorded with how unusual its amount was for its
    card (``card``: its card features): the one order both paths use."""
    values = state.features(time, label_delay_days)
    state.update(time, tx_id, amount, card[_ZSCORE], label_delay_days)
    return values


def calendar_features(time: float) -> list[float]:
    """Weekend (Saturday/Sunday) and night (hour 0-6) flags of an epoch time, read in UTC."""
    moment = datetime.fromtimestamp(time, tz=timezone.utc)
    return [float(moment.weekday() >= 5), float(moment.hour <= 6)]


def feature_vector(time: float, amount: float, card: Sequence[float], terminal: list[float]) -> list[float]:
    """The model's input row, in ``FEATURE_NAMES`` order."""
    return [amount, *calendar_features(time), *card, *terminal]


__all__ = [
    "BASELINE_FEATURE_NAMES",
    "CardReading",
    "DAY",
    "DEFAULT_LABEL_DELAY_DAYS",
    "FEATURES",
    "FEATURE_NAMES",
    "SEQUENCE_LENGTH",
    "SEQUENCE_STEP",
    "CardState",
    "Feature",
    "TerminalState",
    "calendar_features",
    "card_step",
    "feature_vector",
    "terminal_step",
]
