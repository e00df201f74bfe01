"""The analysts' views on real store files: late, repeated and unknown labels, daily figures, drift, retention."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from audit import AuditStore, connect
from models.reference import population_stability, reference_profile

DAY_MS = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NAMES = ["amount", "is_night"]


def decision(tx_id: str, day: int, *, score: float, alert: bool, amount: float = 10.0, model: str = "v1") -> dict:
    return {
        "tx_id": tx_id, "event_time": T0 + day * DAY_MS, "card_id": "tok", "terminal_id": "m", "amount": amount,
        "score": score, "score_logit": 0.0, "threshold": 0.5, "is_alert": alert, "model_version": model,
        "decided_at": T0 + day * DAY_MS + 100, "features": [amount, 0.0], "reasons": [],
    }


def label(tx_id: str, is_fraud: bool, reported_day: float, source: str = "chargeback") -> dict:
    return {"tx_id": tx_id, "is_fraud": is_fraud, "source": source, "reported_at": int(T0 + reported_day * DAY_MS)}


def rows(root: Path, sql: str) -> list[tuple]:
    with connect(root) as con:
        return con.sql(sql).fetchall()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "audit"


def test_labels_weeks_late_twice_or_for_unknown_transactions_are_kept_and_reported(root: Path) -> None:
    with AuditStore(root, export_interval_s=0) as store:
        store.add_decisions([decision("t1", 0, score=0.9, alert=True), decision("t2", 0, score=0.1, alert=False)])
        store.flush()
        store.add_labels([label("t1", True, 30), label("t1", True, 30)])  # a month late, sent twice
        store.add_labels([label("ghost", True, 31)])  # a transaction the store never saw
        store.flush()
    with AuditStore(root, export_interval_s=0) as store:  # later, another writer run: the analyst reverses it
        store.add_labels([label("t1", False, 45, source="analyst"), label("ghost", True, 31)])
        result = store.flush()

    assert (result.labels_inserted, result.labels_duplicate) == (1, 1)
    assert rows(root, "SELECT tx_id, is_fraud, source, reports FROM labels ORDER BY tx_id") == [
        ("ghost", True, "chargeback", 1), ("t1", False, "analyst", 2),
    ]
    assert rows(root, "SELECT tx_id FROM labels_unmatched") == [("ghost",)]
    assert rows(root, "SELECT tx_id, label FROM decisions_labelled ORDER BY tx_id") == [("t1", False), ("t2", None)]
    # a late decision matches its label once it arrives
    with AuditStore(root, export_interval_s=0) as store:
        store.add_decisions([decision("ghost", 1, score=0.2, alert=False)])
    assert rows(root, "SELECT count(*) FROM labels_unmatched") == [(0,)]


def test_daily_gives_volume_alert_rate_precision_recall_and_score_quantiles(root: Path) -> None:
    day0 = [decision(f"a{i}", 0, score=i / 10, alert=i >= 8) for i in range(10)]  # 2 alerts: a8, a9
    day1 = [decision(f"b{i}", 1, score=0.2, alert=False) for i in range(4)]
    labels = [label("a9", True, 5), label("a8", False, 5), label("a3", True, 6), label("b0", False, 9)]
    with AuditStore(root, export_interval_s=0) as store:
        store.add_decisions(day0 + day1)
        store.add_labels(labels)

    got = rows(root, "SELECT day, decisions, alerts, alert_rate, labelled, frauds, labelled_alerts, true_alerts, "
                     "precision, recall FROM daily ORDER BY day")
    assert got == [
        (date(2026, 1, 1), 10, 2, 0.2, 3, 2, 2, 1, 0.5, 0.5),
        (date(2026, 1, 2), 4, 0, 0.0, 1, 0, 0, 0, None, None),
    ]
    (p50, p99), = rows(root, "SELECT score_p50, score_p99 FROM daily WHERE day = DATE '2026-01-02'")
    assert p50 == pytest.approx(0.2) and p99 == pytest.approx(0.2)


def test_drift_is_the_population_stability_of_each_day_against_the_training_bins(root: Path) -> None:
    rng = np.random.default_rng(0)
    train_x = np.column_stack([rng.lognormal(3, 1, 5000), rng.integers(0, 2, 5000)])
    train_scores = rng.beta(1, 20, 5000)
    reference = reference_profile(train_x, train_scores, NAMES)
    same = rng.lognormal(3, 1, 2000)
    shifted = rng.lognormal(4, 1, 2000)  # the second day's amounts are e times larger
    with AuditStore(root, export_interval_s=0) as store:
        store.add_model("v1", reference)
        store.add_decisions(
            [decision(f"s{i}", 0, score=0.01, alert=False, amount=a) for i, a in enumerate(same)]
            + [decision(f"x{i}", 1, score=0.01, alert=False, amount=a) for i, a in enumerate(shifted)]
            + [decision("other", 1, score=0.5, alert=False, model="unknown-model")]
        )

    psi = {(day.day, variable): value for day, variable, value in rows(root, "SELECT day, variable, psi FROM drift")}
    assert set(psi) == {(day, variable) for day in (1, 2) for variable in ("score", *NAMES)}
    assert psi[1, "amount"] == pytest.approx(population_stability(reference["features"]["amount"], same))
    assert psi[2, "amount"] == pytest.approx(population_stability(reference["features"]["amount"], shifted))
    assert psi[1, "amount"] < 0.05 < 0.25 < psi[2, "amount"]
    assert psi[1, "score"] == pytest.approx(population_stability(reference["score"], np.full(2000, 0.01)))
    # features read back by name through the model's feature names
    assert rows(root, "SELECT features['amount'] = amount, features['is_night'] FROM decisions LIMIT 1") == [(True, 0.0)]


def test_retention_deletes_old_rows_everywhere_and_readers_stop_seeing_them(root: Path) -> None:
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)  # day 59
    alert = {**decision("old-alert", 0, score=0.9, alert=True),
             "reasons": [{"feature": "amount", "label": "amount", "value": 10.0, "contribution": 1.0}]}
    with AuditStore(root, export_interval_s=0, segment_rows=1) as store:  # every export seals its segment
        store.add_decisions([alert, decision("old", 1, score=0.1, alert=False)])
        store.add_labels([label("old-alert", True, 2)])
        store.flush()
        store.add_decisions([decision("recent", 55, score=0.1, alert=False)])
        store.add_labels([label("recent", False, 56)])
        store.flush()
        result = store.prune(30, now=now)
        assert (result.decisions, result.reasons, result.labels) == (2, 1, 1)
        assert rows(root, "SELECT tx_id FROM decisions UNION ALL SELECT tx_id FROM reasons UNION ALL "
                          "SELECT tx_id FROM label_history") == [("recent",), ("recent",)]
        segments = root / "segments" / "decisions"
        assert sorted(p.name for p in segments.iterdir()) == ["000000000000.parquet", "000000000001.parquet", "000000000002.parquet"]
        # the emptied segment stays until the next pruning, for queries that listed it a moment before
        assert store.prune(30, now=now).decisions == 0
        assert sorted(p.name for p in segments.iterdir()) == ["000000000000.parquet", "000000000002.parquet"]
    with AuditStore(root, export_interval_s=0) as store:  # the deletion is durable in the writer's database too
        store.export()
    assert rows(root, "SELECT count(*) FROM decisions") == [(1,)]
