"""Metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.features import DAY
from models.metrics import auc_roc, average_precision, card_precision_at_k, detection_metrics


def test_auc_counts_correctly_ordered_pairs():
    # pairs (fraud, genuine): 0.35 > 0.1, 0.35 < 0.4, 0.8 > 0.1, 0.8 > 0.4 → 3 of 4
    assert auc_roc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    # a tie between a fraud and a genuine counts half
    assert auc_roc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5


def test_average_precision_is_the_step_area_under_precision_recall():
    # ranked: 0.8 fraud (P 1, R 1/2), 0.4 genuine, 0.35 fraud (P 2/3, R 1) → 1/2 · 1 + 1/2 · 2/3
    assert average_precision(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(5 / 6)


def test_metrics_are_nan_when_undefined():
    assert math.isnan(auc_roc(np.zeros(3), np.arange(3.0)))
    assert math.isnan(average_precision(np.zeros(3), np.arange(3.0)))


def _cards_frame() -> tuple[pd.DataFrame, np.ndarray]:
    rows = [  # (day + hour, card, label, score)
        (0 + 0.10, "a", 0, 0.90), (0 + 0.90, "a", 1, 0.20), (0 + 0.50, "b", 0, 0.80), (0 + 0.30, "c", 1, 0.10),
        (1 + 0.20, "a", 1, 0.95), (1 + 0.40, "b", 0, 0.30), (1 + 0.60, "c", 1, 0.50), (1 + 0.99, "d", 0, 0.40),
        (2 + 0.01, "c", 1, 0.90), (2 + 0.50, "b", 0, 0.20),
    ]
    frame = pd.DataFrame({"time": [r[0] * DAY for r in rows], "card_id": [r[1] for r in rows], "label": [r[2] for r in rows]})
    return frame, np.array([r[3] for r in rows])


def test_card_precision_takes_card_maxima_and_drops_detected_cards():
    frame, scores = _cards_frame()
    # day 0: a (max score 0.9, max label 1), b (0.8, 0), c (0.1, 1): top 2 = a, b → 1/2; a is detected
    # day 1: a left out; c (0.5, 1), d (0.4, 0), b (0.3, 0): top 2 = c, d → 1/2; c is detected
    # day 2: c left out; b alone → 0 frauds out of k = 2 → 0
    assert card_precision_at_k(frame, scores, k=2) == pytest.approx(1 / 3)
    # row order does not matter
    order = np.random.default_rng(0).permutation(len(frame))
    assert card_precision_at_k(frame.iloc[order], scores[order], k=2) == pytest.approx(1 / 3)


def test_card_precision_with_k_one_and_large_k():
    frame, scores = _cards_frame()
    # k = 1: day 0 a → 1 (a detected); day 1 c (0.5) → 1 (c detected); day 2 b → 0
    assert card_precision_at_k(frame, scores, k=1) == pytest.approx(2 / 3)
    # k = 10: day 0 two frauds (a, c); day 1 both detected already, b and d genuine; day 2 b genuine
    assert card_precision_at_k(frame, scores, k=10) == pytest.approx((2 / 10 + 0 + 0) / 3)


def test_detection_metrics_names_the_card_precision_after_k():
    frame, scores = _cards_frame()
    metrics = detection_metrics(frame, scores, k=2)
    assert set(metrics) == {"auc", "ap", "cp_at_2"}
    assert metrics["cp_at_2"] == pytest.approx(1 / 3)
    assert metrics["auc"] == auc_roc(frame["label"].to_numpy(), scores)
