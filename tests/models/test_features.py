"""Hand-worked examples of every feature, through the state classes and through the offline replay.

Times are in days from 1970-01-01 00:00 UTC, a Thursday; every expected value below is worked out by hand
in the comment beside it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from models.features import (
    BASELINE_FEATURE_NAMES,
    DAY,
    FEATURE_NAMES,
    CardState,
    TerminalState,
    calendar_features,
    card_step,
    terminal_step,
)
from models.replay import replay_features

CARD_WINDOW_COLUMNS = [name for name in BASELINE_FEATURE_NAMES if name.startswith("card_")]
CARD_COLUMNS = [name for name in FEATURE_NAMES if name.startswith("card_")]
TERMINAL_WINDOW_COLUMNS = [name for name in BASELINE_FEATURE_NAMES if name.startswith("terminal_")]
TERMINAL_COLUMNS = [name for name in FEATURE_NAMES if name.startswith("terminal_")]

# One card's history (day, amount, terminal), then the transaction scored at day 21 for 50 at terminal t4.
CARD_HISTORY = [(0.0, 10.0, "t1"), (0.5, 20.0, "t2"), (5.0, 30.0, "t1"), (15.0, 60.0, "t3"), (20.0, 40.0, "t1"), (20.5, 80.0, "t2")]
CARD_NOW = (21.0, 50.0, "t4")
# The z-score each history transaction had when it happened: mean and spread of the amounts before it,
# the spread floored at a tenth of the mean. Day 0 has no history (0); day 0.5: (20 - 10) / max(0, 1) = 10;
# day 5: (30 - 15) / 5 = 3; day 15: (60 - 20) / sqrt(200 / 3) = 4.899; day 20: (40 - 30) / sqrt(350) = 0.535;
# day 20.5: (80 - 32) / sqrt(296) = 2.790.
HISTORY_ZSCORES = [0.0, 10.0, 3.0, 40 / math.sqrt(200 / 3), 10 / math.sqrt(350), 48 / math.sqrt(296)]
CARD_ZSCORE = 10 / math.sqrt(13000 / 6 - 1600)  # 50 against the six amounts: mean 40, variance 566.7
CARD_EXPECTED = [
    2.0, 65.0,  # 1 day (20, 21]: 20.5 → 80 and the current 50; day 20 sits on the open boundary
    4.0, 57.5,  # 7 days (14, 21]: 60, 40, 80 and 50 → 230 / 4
    7.0, 290.0 / 7,  # 30 days: all six and the current one → 290 / 7
    50 / 40,  # amount versus the card's mean of 240 / 6
    CARD_ZSCORE,  # 0.420
    50 / 80,  # versus the largest amount in 30 days
    12.0,  # hours since day 20.5
    1.0,  # only itself within the hour
    1.0,  # t4 is new to the card
    1 / 4,  # 14 days (7, 21]: days 15, 20, 20.5 and now; only day 15 had a z-score of 3 or more
    6.0,  # six earlier transactions
]

# One terminal's history (day, fraud?), then a transaction scored at day 17 with a 7-day label delay,
# so every window ends at day 10.
TERMINAL_HISTORY = [(0.5, 0), (1.0, 1), (2.5, 0), (9.0, 1), (10.0, 0), (12.0, 1)]
TERMINAL_NOW = 17.0
TERMINAL_EXPECTED = [
    1.0, 0.0,  # 1 day (9, 10]: only day 10, genuine (day 9 sits on the open boundary)
    2.0, 0.5,  # 7 days (3, 10]: days 9 (fraud) and 10
    5.0, 0.4,  # 30 days (-20, 10]: five transactions, two frauds; day 12 is after the delayed window
]
TERMINAL_BEHAVIOUR_EXPECTED = [
    2.0,  # the frauds of days 1 and 9 are known and within 28 days; day 12's label arrives on day 19
    8.0,  # days since the latest known fraud, day 9
    1.0,  # that fraud follows a genuine transaction (day 2.5): a streak of one
    8.0,  # calendar days 9 to 17
    0.5,  # one fraud among the two transactions from day 9 to the window's end at day 10
    10.0,  # the amount of that latest known fraud, day 9
    0.0,  # its z-score for its card: the card's first transaction
]
ORDINARY = [0.0] * len(CARD_COLUMNS)
"""Card features of a transaction with an amount z-score of 0, for terminal tests."""


def _frame(rows: list[tuple[float, str, str, float, int]]) -> pd.DataFrame:
    """A normalized frame from (day, card, terminal, amount, label) rows, in the given (time) order."""
    return pd.DataFrame(
        {
            "tx_id": [f"tx{index}" for index in range(len(rows))],
            "time": [day * DAY for day, *_ in rows],
            "card_id": [row[1] for row in rows],
            "terminal_id": [row[2] for row in rows],
            "amount": [row[3] for row in rows],
            "label": [row[4] for row in rows],
        }
    )


def _row(features: np.ndarray, columns: list[str]) -> list[float]:
    return [float(features[FEATURE_NAMES.index(name)]) for name in columns]


def test_calendar_flags_are_read_in_utc():
    assert calendar_features(0.0) == [0.0, 1.0]  # Thursday, midnight
    assert calendar_features(2 * DAY + 12 * 3600) == [1.0, 0.0]  # Saturday noon
    assert calendar_features(3 * DAY + 6 * 3600 + 3599) == [1.0, 1.0]  # Sunday 06:59:59 is still night
    assert calendar_features(4 * DAY + 7 * 3600) == [0.0, 0.0]  # Monday 07:00 is day


def _card_with_history() -> CardState:
    state = CardState()
    for day, amount, terminal in CARD_HISTORY:
        card_step(state, day * DAY, amount, f"c{day}-{amount}", terminal)
    return state


def test_card_features_of_a_hand_worked_history():
    state = _card_with_history()
    assert state.zscores == pytest.approx(HISTORY_ZSCORES)
    assert state.new_terminals == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert state.read(CARD_NOW[0] * DAY, CARD_NOW[1], CARD_NOW[2]).features == pytest.approx(CARD_EXPECTED)


def test_the_card_sequence_holds_the_last_steps_oldest_first():
    reading = _card_with_history().read(CARD_NOW[0] * DAY, CARD_NOW[1], CARD_NOW[2])
    steps = np.array(reading.sequence).reshape(8, 4)  # present, z-score, log1p(hours since previous), new terminal
    assert steps[0].tolist() == [0.0, 0.0, 0.0, 0.0]  # seven transactions: one step of padding
    assert steps[1:, 0].tolist() == [1.0] * 7
    assert steps[1:, 1] == pytest.approx(HISTORY_ZSCORES + [CARD_ZSCORE])
    # the first transaction reads 60 days since the previous one: no history
    assert np.expm1(steps[1:, 2]) == pytest.approx([1440.0, 12.0, 108.0, 240.0, 120.0, 12.0, 12.0])
    assert steps[1:, 3].tolist() == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0]


def test_amounts_older_than_the_windows_still_count_in_the_card_usual_spending():
    state = CardState()
    card_step(state, 0.0, 10.0, "old", "t1")
    card_step(state, 40 * DAY, 30.0, "recent", "t1")
    assert state.tx_ids == ["recent"] and state.archive == [1.0, 10.0, 100.0]
    values = dict(zip(CARD_COLUMNS, state.read(41 * DAY, 20.0, "t1").features))
    # mean of 10 and 30 is 20, so the amount is exactly usual; its 30-day maximum is 30
    assert values["card_amount_zscore"] == 0.0 and values["card_amount_vs_max_30d"] == pytest.approx(20 / 30)
    assert values["card_history_count"] == 2.0 and values["card_new_terminal"] == 0.0
    assert values["card_tx_count_30d"] == 2.0  # the 30-day window itself has forgotten day 0


def test_a_card_z_score_is_clipped_and_its_spread_floored():
    state = CardState()
    for index in range(3):
        card_step(state, index * DAY, 100.0, f"same{index}", "t1")
    values = dict(zip(CARD_COLUMNS, state.read(3 * DAY, 150.0, "t1").features))
    assert values["card_amount_zscore"] == pytest.approx(5.0)  # (150 - 100) / max(0, 10): a tenth of the mean
    assert dict(zip(CARD_COLUMNS, state.read(3 * DAY, 10_000.0, "t1").features))["card_amount_zscore"] == 50.0
    assert dict(zip(CARD_COLUMNS, state.read(3 * DAY, 0.0, "t1").features))["card_amount_zscore"] == -5.0


def test_a_sub_cent_history_gives_no_ratio_and_nothing_infinite():
    state = CardState()
    card_step(state, 0.0, 5e-324, "tiny", "t1")  # found by the hostile-input test: 1 / 5e-324 is infinite
    values = dict(zip(CARD_COLUMNS, state.read(DAY, 1.0, "t1").features))
    assert values["card_amount_vs_mean"] == 1.0 and values["card_amount_vs_max_30d"] == 1.0
    assert all(np.isfinite(list(values.values())))


def test_card_features_through_replay():
    rows = [(day, "c", terminal, amount, 0) for day, amount, terminal in CARD_HISTORY]
    rows.append((CARD_NOW[0], "c", CARD_NOW[2], CARD_NOW[1], 0))
    rows.insert(3, (6.0, "other", "t1", 1000.0, 1))  # another card's transaction changes nothing
    inputs = replay_features(_frame(rows))
    assert _row(inputs.features[-1], CARD_COLUMNS) == pytest.approx(CARD_EXPECTED)
    assert inputs.sequences[-1].reshape(-1).tolist() == pytest.approx(
        _card_with_history().read(CARD_NOW[0] * DAY, CARD_NOW[1], CARD_NOW[2]).sequence
    )
    # amount, weekend and night of day 21: Thursday 1970-01-22 at midnight
    assert inputs.features[-1][:3].tolist() == [50.0, 0.0, 1.0]
    # the first transaction only sees itself: no history, 60 days since a previous one, a new terminal
    assert _row(inputs.features[0], CARD_COLUMNS) == [1.0, 10.0, 1.0, 10.0, 1.0, 10.0, 1.0, 0.0, 1.0, 1440.0, 1.0, 1.0, 0.0, 0.0]


def test_terminal_windows_are_shifted_back_by_the_label_delay():
    state = TerminalState()
    for index, (day, _) in enumerate(TERMINAL_HISTORY):
        terminal_step(state, day * DAY, f"tx{index}", 10.0, ORDINARY, 7)
    for index, (day, fraud) in enumerate(TERMINAL_HISTORY):
        if fraud:
            assert state.label(f"tx{index}", True, reported=(day + 7) * DAY)
    assert state.features(TERMINAL_NOW * DAY, label_delay_days=7) == pytest.approx(TERMINAL_EXPECTED + TERMINAL_BEHAVIOUR_EXPECTED)


def test_terminal_windows_through_replay():
    rows = [(day, f"c{index}", "T", 10.0, fraud) for index, (day, fraud) in enumerate(TERMINAL_HISTORY)]
    rows.append((TERMINAL_NOW, "c9", "T", 10.0, 0))
    features = replay_features(_frame(rows), label_delay_days=7).features
    assert _row(features[-1], TERMINAL_COLUMNS) == pytest.approx(TERMINAL_EXPECTED + TERMINAL_BEHAVIOUR_EXPECTED)
    # At day 12 the window ends at day 5: the labels of days 1 (arrived day 8) and 0.5, 2.5 (genuine) count.
    assert _row(features[5], TERMINAL_WINDOW_COLUMNS) == pytest.approx([0.0, 0.0, 3.0, 1 / 3, 3.0, 1 / 3])


def test_a_run_of_known_frauds_reads_as_a_streak():
    state = TerminalState()
    for day in (1.0, 2.0, 3.0, 4.0):  # frauds on days 1 to 3, then a genuine transaction on day 4
        terminal_step(state, day * DAY, f"d{day}", 10.0, ORDINARY, 7)
    for day in (1.0, 2.0, 3.0):
        state.label(f"d{day}", True, reported=(day + 7) * DAY)
    values = dict(zip(TERMINAL_COLUMNS, state.features(12.5 * DAY, 7)))  # window ends at day 5.5
    assert values["terminal_fraud_streak"] == 3.0
    assert values["terminal_days_since_streak_start"] == 11.0  # calendar days 1 to 12
    assert values["terminal_streak_share"] == 0.75  # three of the four transactions since day 1
    assert values["terminal_known_frauds_28d"] == 3.0 and values["terminal_days_since_last_fraud"] == 9.5


def test_the_latest_known_fraud_says_whether_it_looked_like_a_card_or_a_terminal_compromise():
    state = TerminalState()
    unusual = list(ORDINARY)
    unusual[CARD_COLUMNS.index("card_amount_zscore")] = 6.0
    terminal_step(state, 1.0 * DAY, "large", 900.0, unusual, 7)  # a stolen card's spree: unusual for its card
    terminal_step(state, 2.0 * DAY, "ordinary", 35.0, ORDINARY, 7)  # an ordinary purchase, as a skimmer's are
    assert state.label("large", True, reported=8 * DAY)
    values = dict(zip(TERMINAL_COLUMNS, state.features(8.5 * DAY, 7)))
    assert (values["terminal_last_fraud_amount"], values["terminal_last_fraud_zscore"]) == (900.0, 6.0)
    state.label("ordinary", True, reported=9 * DAY)
    values = dict(zip(TERMINAL_COLUMNS, state.features(9.5 * DAY, 7)))
    assert (values["terminal_last_fraud_amount"], values["terminal_last_fraud_zscore"]) == (35.0, 0.0)
    # before any known fraud both read 0
    assert state.features(1.5 * DAY, 7)[-2:] == [0.0, 0.0]


def test_a_known_fraud_older_than_the_longest_window_is_not_read_though_still_held():
    """Terminals hold more history than the windows read (a partition behind in event time finds them whole);
    what they hold beyond the windows must not change a feature, or features would follow the retention."""
    state = TerminalState()
    for day in (0.0, 1.0):  # a run of two frauds, then a genuine transaction
        terminal_step(state, day * DAY, f"d{day}", 10.0, ORDINARY, 7)
        state.label(f"d{day}", True, reported=(day + 7) * DAY)
    terminal_step(state, 2.0 * DAY, "genuine", 10.0, ORDINARY, 7)
    inside = dict(zip(TERMINAL_COLUMNS, state.features(37.5 * DAY, 7)))  # the window reaches back to day 0.5
    beyond = dict(zip(TERMINAL_COLUMNS, state.features(38.5 * DAY, 7)))  # to day 1.5: both frauds are older
    assert "d0.0" in state.tx_ids
    assert (inside["terminal_fraud_streak"], inside["terminal_days_since_last_fraud"]) == (1.0, 36.5)
    assert (beyond["terminal_fraud_streak"], beyond["terminal_days_since_last_fraud"]) == (0.0, 60.0)
    assert beyond == dict(zip(TERMINAL_COLUMNS, TerminalState().features(38.5 * DAY, 7))) | {"terminal_tx_count_30d": 1.0}


def test_a_label_reported_early_waits_for_the_label_delay():
    state = TerminalState()
    terminal_step(state, 10 * DAY, "quick", 10.0, ORDINARY, 7)
    state.label("quick", True, reported=11 * DAY)  # a chargeback within a day: known, but not yet usable
    values = dict(zip(TERMINAL_COLUMNS, state.features(12 * DAY, 7)))
    assert values["terminal_known_frauds_28d"] == 0.0 and values["terminal_fraud_streak"] == 0.0
    assert values["terminal_days_since_last_fraud"] == 60.0  # reads as no known fraud
    assert dict(zip(TERMINAL_COLUMNS, state.features(17 * DAY, 7)))["terminal_days_since_last_fraud"] == 7.0


def test_a_label_is_used_only_once_its_feedback_has_arrived():
    state = TerminalState()
    terminal_step(state, 0.5 * DAY, "late", 10.0, ORDINARY, 7)
    # day 8, window (0, 1]: the transaction is old enough, but its label has not arrived: counted as genuine
    assert state.features(8 * DAY, 7)[:2] == [1.0, 0.0]
    state.label("late", True, reported=8 * DAY)
    assert state.features(8 * DAY, 7)[:2] == [1.0, 1.0]
    # a label reported after the transaction being scored is not used, whenever it was processed
    assert state.features(7.9 * DAY, 7)[:2] == [1.0, 0.0]


def test_replay_applies_a_label_exactly_at_the_label_delay():
    rows = [(0.5, "a", "T", 10.0, 1), (7.5 - 1 / DAY, "b", "T", 10.0, 0), (7.5, "c", "T", 10.0, 0)]
    features = replay_features(_frame(rows), label_delay_days=7).features
    # one second before the label arrives the fraud is also still outside the delayed window
    assert _row(features[1], TERMINAL_COLUMNS)[:2] == [0.0, 0.0]
    assert _row(features[2], TERMINAL_COLUMNS)[:2] == [1.0, 1.0]
    # a transaction's own label never reaches its own features
    assert _row(features[0], TERMINAL_WINDOW_COLUMNS) == [0.0] * 6


def test_a_duplicate_label_counts_once_and_the_latest_verdict_wins():
    state = TerminalState()
    terminal_step(state, 1.0 * DAY, "a", 10.0, ORDINARY, 7)
    terminal_step(state, 1.5 * DAY, "b", 10.0, ORDINARY, 7)
    assert state.label("a", True, reported=8 * DAY) and state.label("a", True, reported=8 * DAY)
    assert [label[2:4] for label in state.labels] == [["a", True]]
    assert state.features(9 * DAY, 7)[2:4] == [2.0, 0.5]  # 7 days (-5, 2]: both transactions, one fraud
    assert state.label("a", False, reported=8.5 * DAY)
    assert state.features(9 * DAY, 7)[2:4] == [2.0, 0.0]
    # an older report arriving late does not overturn the newer verdict
    assert state.label("a", True, reported=8 * DAY)
    assert state.features(9 * DAY, 7)[2:4] == [2.0, 0.0]


def test_a_reversed_verdict_counts_until_its_reversal_whatever_order_the_reports_arrive_in():
    """Fraud reported on day 8, then "genuine" on day 12: a transaction scored on day 10 sees the fraud, and
    one on day 13 does not, however the reports and the transactions interleave."""
    reports = [(True, 8 * DAY), (False, 12 * DAY)]
    for order in (reports, reports[::-1]):
        state = TerminalState()
        terminal_step(state, 1.0 * DAY, "a", 10.0, ORDINARY, 7)
        terminal_step(state, 1.5 * DAY, "b", 10.0, ORDINARY, 7)
        for is_fraud, reported in order:
            assert state.label("a", is_fraud, reported)
        assert state.features(10 * DAY, 7)[2:4] == [2.0, 0.5]  # 7 days (-4, 3]: both, "a" still fraud on day 10
        assert state.features(13 * DAY, 7)[2:4] == [2.0, 0.0]  # (-1, 6]: both, "a" genuine from day 12


def test_reports_waiting_for_their_transaction_keep_their_order_in_time():
    state = TerminalState()
    assert not state.label("a", False, reported=12 * DAY) and not state.label("a", True, reported=8 * DAY)
    terminal_step(state, 1.0 * DAY, "a", 10.0, ORDINARY, 7)
    assert state.features(10 * DAY, 7)[2:4] == [1.0, 1.0] and state.features(13 * DAY, 7)[2:4] == [1.0, 0.0]


def test_a_terminal_state_survives_json_and_reads_states_written_before_superseded_reports():
    state = TerminalState()
    terminal_step(state, 1.0 * DAY, "a", 10.0, ORDINARY, 7)
    state.label("a", True, reported=8 * DAY)
    state.label("a", False, reported=12 * DAY)
    recorded = json.loads(json.dumps(state.to_dict(), allow_nan=False))
    assert TerminalState.from_dict(recorded).to_dict() == state.to_dict()
    before = {**recorded, "labels": [[1.0 * DAY, 8 * DAY, "a", True, 10.0, 0.0]]}
    assert TerminalState.from_dict(before).features(13 * DAY, 7)[2:4] == [1.0, 1.0]  # (-1, 6]: "a", fraud
    terminal_step(state, 2.0 * DAY, "b", 10.0, ORDINARY, 7)
    mixed = json.loads(json.dumps(state.to_dict()))  # then an older worker, in a rolling upgrade, labelled "b"
    mixed["labels"].append([2.0 * DAY, 9 * DAY, "b", True, 10.0, 0.0])
    assert TerminalState.from_dict(mixed).features(13 * DAY, 7)[2:4] == [2.0, 0.5]  # "a" genuine from day 12, "b" fraud


def test_a_label_before_its_transaction_waits_for_it():
    state = TerminalState()
    assert state.label("early", True, reported=7 * DAY) is False
    assert state.pending == [["early", True, 7 * DAY]]
    terminal_step(state, 0.0, "early", 10.0, ORDINARY, 7)
    assert state.pending == [] and [label[2:4] for label in state.labels] == [["early", True]]
    assert state.features(7.5 * DAY, 7)[:2] == [1.0, 1.0]


def test_a_repeated_transaction_is_recorded_once():
    state = TerminalState()
    terminal_step(state, 1.0 * DAY, "a", 10.0, ORDINARY, 7)
    terminal_step(state, 1.0 * DAY, "a", 10.0, ORDINARY, 7)
    assert state.tx_ids == ["a"]


def test_an_out_of_order_card_transaction_sees_only_earlier_ones():
    state = CardState()
    card_step(state, 10 * DAY, 100.0, "late", "t1")
    # arriving late, the day-5 transaction does not see the day-10 one: not in its windows, not in its
    # history, and the terminal the card used only later is new to it
    early = dict(zip(CARD_COLUMNS, card_step(state, 5 * DAY, 20.0, "early", "t1").features))
    assert [early[name] for name in CARD_WINDOW_COLUMNS] == [1.0, 20.0, 1.0, 20.0, 1.0, 20.0]
    assert early["card_history_count"] == 0.0 and early["card_new_terminal"] == 1.0 and early["card_amount_zscore"] == 0.0
    assert state.times == [5 * DAY, 10 * DAY] and state.terminals == ["t1", "t1"]
    # day 11: day 10 sits on the 1-day boundary; the 7- and 30-day windows see both, (20 + 100 + 30) / 3
    assert state.read(11 * DAY, 30.0, "t1").features[:6] == pytest.approx([1.0, 30.0, 3.0, 50.0, 3.0, 50.0])


def test_a_redelivered_card_transaction_reads_as_the_first_time_and_changes_nothing():
    state = _card_with_history()
    first = card_step(state, CARD_NOW[0] * DAY, CARD_NOW[1], "now", CARD_NOW[2])
    recorded = state.to_dict()
    again = card_step(state, CARD_NOW[0] * DAY, CARD_NOW[1], "now", CARD_NOW[2])
    assert again == first and state.to_dict() == recorded
    assert CardState.from_dict(recorded).to_dict() == recorded


def test_an_out_of_order_terminal_transaction_is_kept_in_time_order():
    state = TerminalState()
    terminal_step(state, 10 * DAY, "late-seen-first", 10.0, ORDINARY, 7)
    terminal_step(state, 5 * DAY, "early", 10.0, ORDINARY, 7)
    assert state.tx_ids == ["early", "late-seen-first"]
    assert state.label("early", True, reported=12 * DAY)
    # day 12.5: window (4.5, 5.5] holds the day-5 fraud only
    assert state.features(12.5 * DAY, 7)[:2] == [1.0, 1.0]


def test_replay_refuses_a_frame_out_of_time_order():
    rows = [(2.0, "a", "T", 1.0, 0), (1.0, "a", "T", 1.0, 0)]
    with pytest.raises(ValueError, match="sorted by time"):
        replay_features(_frame(rows))


def test_old_transactions_and_their_labels_are_forgotten():
    state = TerminalState()
    terminal_step(state, 0.0, "old", 10.0, ORDINARY, 7)
    state.label("old", True, reported=7 * DAY)
    state.label("never-seen", True, reported=1 * DAY)
    terminal_step(state, 45 * DAY, "new", 10.0, ORDINARY, 7)  # 45 days > 30 + 7 + 7: "old" leaves every window
    assert state.tx_ids == ["new"] and state.labels == [] and state.pending == []


def test_terminal_features_do_not_depend_on_arrival_order_while_partitions_are_less_than_a_label_delay_apart():
    """A terminal's transactions come re-keyed from many card partitions, which can be days apart in event time
    (a worker catching up after a restart, a replay at full speed). Here every other transaction arrives 6.5
    days late: each terminal feature still equals the one computed in time order."""
    rng = np.random.default_rng(3)
    times = np.sort(rng.uniform(0, 90 * DAY, 600))
    transactions = [(float(time), f"t{i}", float(rng.uniform(1, 100)), i % 5 == 0) for i, time in enumerate(times)]

    def features_by_tx(arrival: list[tuple[float, str, float, bool]]) -> dict[str, list[float]]:
        state, seen = TerminalState(), {}
        for time, tx_id, amount, is_fraud in arrival:
            seen[tx_id] = terminal_step(state, time, tx_id, amount, ORDINARY, 7)
            state.label(tx_id, is_fraud, reported=time + DAY)
        return seen

    lagging = sorted(transactions, key=lambda tx: tx[0] + (6.5 * DAY if int(tx[1][1:]) % 2 else 0.0))
    assert lagging != transactions
    assert features_by_tx(lagging) == features_by_tx(transactions)
