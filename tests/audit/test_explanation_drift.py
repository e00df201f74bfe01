"""The explanation_drift view on a real store: per day and reason, the share of alerts that reason leads."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from audit import AuditStore, query

DAY_MS = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def alert(tx_id: str, day: int, leading: str | None) -> dict:
    """An alert on ``day`` whose largest |contribution| is ``leading`` (None: explaining failed, no reasons)."""
    reasons = [] if leading is None else [
        {"feature": "amount", "label": "amount is 250.00", "value": 250.0, "contribution": 0.3},
        {"feature": leading, "label": leading, "value": None, "contribution": -2.0 if leading == "is_night" else 2.0},
    ]
    return {
        "tx_id": tx_id, "event_time": T0 + day * DAY_MS + 3_600_000, "card_id": "c", "terminal_id": "t",
        "amount": 250.0, "score": 0.9, "score_logit": 2.2, "threshold": 0.5, "is_alert": True, "model_version": "v1",
        "decided_at": T0 + day * DAY_MS + 3_600_500, "features": [250.0], "base_value": -0.1,
        "additivity_gap": 0.0 if reasons else None, "explanation_flagged": not reasons, "reasons": reasons,
    }


def test_each_day_shares_its_alerts_between_their_leading_reasons(tmp_path: Path) -> None:
    decisions = [
        alert("a1", 0, "recent_spending_pattern"), alert("a2", 0, "recent_spending_pattern"),
        alert("a3", 0, "terminal_fraud_rate_30d"), alert("a4", 0, "is_night"),  # a negative lead still leads
        alert("b1", 1, "terminal_fraud_rate_30d"), alert("b2", 1, None),  # no reasons: counted, led by none
        {**alert("n1", 1, None), "is_alert": False, "explanation_flagged": False},  # not an alert
    ]
    with AuditStore(tmp_path / "audit", export_interval_s=0) as store:
        store.add_decisions(decisions)
        store.flush()
    rows = query(tmp_path / "audit", "SELECT day, reason, alerts_led, alerts, share FROM explanation_drift").to_pylist()
    assert rows == [
        {"day": date(2026, 1, 1), "reason": "recent_spending_pattern", "alerts_led": 2, "alerts": 4, "share": 0.5},
        {"day": date(2026, 1, 1), "reason": "is_night", "alerts_led": 1, "alerts": 4, "share": 0.25},
        {"day": date(2026, 1, 1), "reason": "terminal_fraud_rate_30d", "alerts_led": 1, "alerts": 4, "share": 0.25},
        {"day": date(2026, 1, 2), "reason": "terminal_fraud_rate_30d", "alerts_led": 1, "alerts": 2, "share": 0.5},
    ]
    flagged = query(tmp_path / "audit", "SELECT tx_id FROM decisions WHERE explanation_flagged").column("tx_id")
    assert flagged.to_pylist() == ["b2"]
