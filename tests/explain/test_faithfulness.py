"""The reasons point where the truth is: on simulated data with known fraud scenarios, a trained behaviour
model's alerts are explained by the features of their scenario.

The simulator marks each fraud with its scenario (never a model input): 1, an amount above 220; 2, a
compromised terminal (every transaction there is fraud for 28 days); 3, a compromised card (a third of its
transactions for 14 days are five times its usual amount).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from explain import Explainer
from models.dataset import normalize
from models.features import DAY
from models.replay import replay_features
from models.simulate import simulate
from models.train import TrainConfig, train_from_frame

CARD_VERSUS_HISTORY = {"card_amount_vs_mean", "card_amount_zscore", "card_amount_vs_max_30d", "card_unusual_share_14d"}
SCORE = 0.5
"""Scores at or above this are the alerts examined: the simulation's fraud rate is far above the handbook's."""


@pytest.fixture(scope="module")
def alert_reasons() -> dict[int, list[list[str]]]:
    """Reason names, in order, of each alert, by the fraud scenario behind it.

    The model trains on all but the last simulated week; its alerts over the whole period are examined, as
    large amounts above 220 are rare in any one week.
    """
    frame = normalize(simulate(n_customers=400, n_terminals=800, n_days=49, seed=5))
    inputs = replay_features(frame)
    days = np.floor(frame["time"].to_numpy() / DAY)
    last_week = days > days.max() - 7
    history = np.flatnonzero(~last_week)
    artifact = train_from_frame(frame.iloc[history].reset_index(drop=True), inputs[history], valid_days=7,
                                config=TrainConfig(epochs=15))
    alerts = np.flatnonzero(artifact.predict_proba(inputs) >= SCORE)
    explanations = Explainer.for_artifact(artifact).explain(artifact.head_inputs(inputs[alerts]), inputs.features[alerts])
    by_scenario: dict[int, list[list[str]]] = {}
    for scenario, explanation in zip(frame["scenario"].to_numpy()[alerts], explanations):
        by_scenario.setdefault(int(scenario), []).append([reason.feature for reason in explanation.reasons()])
    return by_scenario


def share(reason_lists: list[list[str]], holds) -> float:  # type: ignore[no-untyped-def]
    return float(np.mean([bool(holds(reasons)) for reasons in reason_lists]))


def test_compromised_terminal_alerts_lead_with_terminal_risk(alert_reasons) -> None:
    terminal = alert_reasons[2]
    assert len(terminal) >= 30
    assert share(terminal, lambda reasons: reasons[0].startswith("terminal_")) >= 0.9, Counter(r[0] for r in terminal)


def test_compromised_card_alerts_lead_with_the_amount_against_the_card_history(alert_reasons) -> None:
    card = alert_reasons[3]
    assert len(card) >= 30
    leads = Counter(reasons[0] for reasons in card)
    # the amount itself or how it compares with the card's history leads ...
    assert share(card, lambda reasons: reasons[0] in CARD_VERSUS_HISTORY | {"amount"}) >= 0.9, leads
    # ... and a comparison with the card's history is among the top three reasons
    assert share(card, lambda reasons: CARD_VERSUS_HISTORY & set(reasons[:3])) >= 0.9, leads
    assert sum(leads[name] for name in CARD_VERSUS_HISTORY) >= 0.3 * len(card), leads


def test_large_amount_alerts_lead_with_the_amount(alert_reasons) -> None:
    large = alert_reasons[1]
    assert len(large) >= 5
    leads = Counter(reasons[0] for reasons in large)
    # the amount, or the amount against the card's history, leads; the amount itself is among the top three
    assert share(large, lambda reasons: reasons[0] in CARD_VERSUS_HISTORY | {"amount"}) == 1.0, leads
    assert share(large, lambda reasons: "amount" in reasons[:3]) >= 0.9, leads
    assert leads["amount"] >= 0.5 * len(large), leads
