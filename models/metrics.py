"""Detection-quality metrics of the handbook protocol: AUC ROC, Average Precision and Card Precision@k.

AUC and AP are scikit-learn's, over transactions. Card Precision@k is what an investigation team feels: each
day it can check ``k`` cards, so a day's score is the share of frauds among the ``k`` riskiest cards.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from models.features import DAY

__all__ = ["auc_roc", "average_precision", "card_precision_at_k", "detection_metrics"]


def _both_classes(y_true: np.ndarray) -> bool:
    return bool(np.any(y_true == 1) and np.any(y_true == 0))


def auc_roc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN when ``y_true`` holds a single class (the AUC is undefined).

    >>> auc_roc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    y = np.asarray(y_true)
    return float(roc_auc_score(y, scores)) if _both_classes(y) else math.nan


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average Precision (area under the step precision-recall curve); NaN without any fraud.

    >>> round(average_precision(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])), 4)
    0.8333
    """
    y = np.asarray(y_true)
    return float(average_precision_score(y, scores)) if np.any(y == 1) else math.nan


def card_precision_at_k(frame_test: pd.DataFrame, scores: np.ndarray, k: int = 100) -> float:
    """Mean over test days of the fraud share among the day's ``k`` highest-scored cards.

    For each day (UTC calendar day of ``time``), in order: a card's score and label are the maxima over its
    transactions that day; cards already detected (a fraud in an earlier day's top ``k``) are left out; the
    cards are ranked by score (ties keep card order) and the frauds among the first ``k`` are divided by ``k``.
    ``frame_test`` needs ``time``, ``card_id`` and ``label``.

    >>> frame = pd.DataFrame({"time": [0.0, 1.0, 2.0, DAY, DAY], "card_id": ["a", "a", "b", "a", "c"],
    ...                       "label": [0, 1, 0, 1, 0]})
    >>> card_precision_at_k(frame, np.array([0.9, 0.1, 0.5, 0.9, 0.2]), k=1)
    0.5
    """
    days = np.floor(frame_test["time"].to_numpy(dtype=np.float64) / DAY).astype(np.int64)
    by_card = (
        pd.DataFrame(
            {"day": days, "card": frame_test["card_id"].to_numpy(), "label": frame_test["label"].to_numpy(), "score": scores}
        )
        .groupby(["day", "card"], sort=True)
        .max()
    )
    detected: set = set()
    precisions = []
    for _day, cards in by_card.groupby(level="day", sort=True):
        cards = cards.droplevel("day")
        cards = cards[~cards.index.isin(detected)]
        top = cards.sort_values("score", ascending=False, kind="stable").head(k)
        frauds = top.index[top["label"].to_numpy() == 1]
        detected.update(frauds)
        precisions.append(len(frauds) / k)
    return float(np.mean(precisions)) if precisions else math.nan


def detection_metrics(frame_test: pd.DataFrame, scores: np.ndarray, k: int = 100) -> dict[str, float]:
    """``{"auc", "ap", "cp_at_100"}`` of scores over a test frame (the key names k as given)."""
    y = frame_test["label"].to_numpy()
    return {
        "auc": auc_roc(y, scores),
        "ap": average_precision(y, scores),
        f"cp_at_{k}": card_precision_at_k(frame_test, scores, k),
    }
