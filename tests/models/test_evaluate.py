"""Fold construction of the handbook protocol, evaluation end to end, and the report files."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from models.dataset import normalize
from models.evaluate import (
    PREQUENTIAL_TEST_STARTS,
    baseline_split,
    evaluate,
    make_fold,
    prequential_folds,
    protocol_folds,
    run_folds,
)
from models.exceptions import ModelError
from models.features import DAY
from models.replay import replay_features
from models.report import PUBLISHED, write_report
from models.simulate import simulate
from models.train import TrainConfig

FAST = TrainConfig(hidden=(16,), epochs=3, batch_size=512)
STARTS = (date(2018, 4, 18), date(2018, 4, 11))


@pytest.fixture(scope="module")
def history() -> tuple[pd.DataFrame, np.ndarray]:
    frame = normalize(simulate(n_customers=200, n_terminals=400, n_days=40, seed=5))
    return frame, replay_features(frame)


def test_a_card_defrauded_in_the_gap_leaves_the_test_days_once_known():
    # training week: days 7-13, gap: 14-20, test: 21-27. Card "g" has a fraud on day 16, so it is known
    # before test day i when 16 <= 21 - 8 + i, i.e. from test day 3 (day 24) on. Card "t" had a fraud in
    # the training week: never tested. Card "n" never had one.
    rows = [(3.0, "v", 0), (8.0, "t", 1), (16.0, "g", 1)]
    rows += [(day + 0.5, card, 0) for day in range(21, 28) for card in ("g", "t", "n")]
    frame = pd.DataFrame({"time": [r[0] * DAY for r in rows], "card_id": [r[1] for r in rows], "label": [r[2] for r in rows]})
    fold = make_fold(frame, date(1970, 1, 8))
    tested = frame.iloc[fold.test]
    assert sorted(set(tested["card_id"])) == ["g", "n"]
    assert (tested.loc[tested["card_id"] == "g", "time"] // DAY).tolist() == [21, 22, 23]
    assert (tested.loc[tested["card_id"] == "n", "time"] // DAY).tolist() == list(range(21, 28))
    assert fold.train.tolist() == [1] and fold.valid.tolist() == [0]


def test_folds_on_simulated_data_follow_the_calendar(history):
    frame, _ = history
    dates = pd.to_datetime(frame["time"], unit="s").dt.date.to_numpy()
    fold = baseline_split(frame, STARTS[0])
    start = STARTS[0]
    assert set(dates[fold.train]) == {start + timedelta(days=d) for d in range(7)}
    assert set(dates[fold.valid]) == {start - timedelta(days=d) for d in range(1, 8)}
    assert set(dates[fold.test]) == {start + timedelta(days=d) for d in range(14, 21)}
    # independent check of the known-card rule, by dates
    fraud_cards = frame.loc[frame["label"] == 1].groupby(dates[frame["label"] == 1])["card_id"].agg(set)
    known = set().union(*(fraud_cards.get(start + timedelta(days=d), set()) for d in range(7)))
    expected = []
    for i in range(7):
        known |= fraud_cards.get(start + timedelta(days=6 + i), set())
        day = np.flatnonzero(dates == start + timedelta(days=14 + i))
        expected += [row for row in day if frame["card_id"].iat[row] not in known]
    assert fold.test.tolist() == expected
    assert len(fold.test) < np.isin(dates, [start + timedelta(days=d) for d in range(14, 21)]).sum()


def test_protocols_pick_their_folds(history):
    frame, _ = history
    assert [fold.train_start for fold in prequential_folds(frame)] == list(PREQUENTIAL_TEST_STARTS)
    assert [fold.train_start for fold in protocol_folds(frame, "prequential", STARTS)] == list(STARTS)
    assert protocol_folds(frame, "baseline", ["2018-04-18"])[0].train_start == STARTS[0]
    assert [fold.train_start for fold in protocol_folds(frame, "baseline")] == [date(2018, 7, 25)]
    with pytest.raises(ModelError, match="protocol"):
        protocol_folds(frame, "holdout")
    with pytest.raises(ModelError, match="no test"):  # the default folds lie after this frame's 40 days
        run_folds(frame, np.zeros((len(frame), 15)), prequential_folds(frame)[:1], FAST)


def test_evaluate_and_report(history, tmp_path):
    frame, features = history
    summary = evaluate(frame, features, "prequential", STARTS, FAST)
    assert [fold["train_start"] for fold in summary["folds"]] == ["2018-04-18", "2018-04-11"]
    for metric in ("auc", "ap", "cp_at_100"):
        values = [fold[metric] for fold in summary["folds"]]
        assert all(0.0 <= value <= 1.0 for value in values)
        assert summary["mean"][metric] == pytest.approx(np.mean(values))
        assert summary["std"][metric] == pytest.approx(np.std(values))
    assert summary["mean"]["auc"] > 0.6

    results = run_folds(frame, features, protocol_folds(frame, "prequential", STARTS), FAST)
    written = write_report(results, frame, tmp_path, name="test MLP")
    assert json.loads((tmp_path / "evaluation.json").read_text())["mean"] == written["mean"]
    text = (tmp_path / "evaluation.md").read_text()
    assert all(model in text for model, *_ in PUBLISHED) and "| **test MLP** |" in text
    assert set(written["scenario_recall"]) <= {"amount > 220", "compromised terminal", "compromised card", "all frauds"}
    for image in ("curves.png", "scenario_recall.png"):
        assert (tmp_path / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
