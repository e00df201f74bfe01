"""The handbook's evaluation protocol: train a week, wait a week for labels, test a week.

Each fold trains on 7 days, skips a 7-day gap (the training labels are only known a week later), and tests on
the 7 days after. Cards already known to be compromised are dropped from the test days, as an investigation
team would have blocked them. Early stopping and the alert threshold use the week *before* the training week,
never the test week, so test figures are not tuned on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Literal

import numpy as np
import pandas as pd
from scipy.special import expit

from models.exceptions import ModelError
from models.features import DAY, DEFAULT_LABEL_DELAY_DAYS, FEATURE_NAMES
from models.metrics import detection_metrics
from models.network import ModelArtifact, ModelInputs
from models.train import TrainConfig, fit, time_range

__all__ = [
    "BASELINE_TRAIN_START",
    "PREQUENTIAL_TEST_STARTS",
    "PREQUENTIAL_VALIDATION_STARTS",
    "Fold",
    "FoldResult",
    "Protocol",
    "baseline_split",
    "evaluate",
    "make_fold",
    "prequential_folds",
    "protocol_folds",
    "run_folds",
    "summarize",
]

logger = logging.getLogger(__name__)

Protocol = Literal["prequential", "baseline"]
BASELINE_TRAIN_START = date(2018, 7, 25)
PREQUENTIAL_TEST_STARTS = (date(2018, 8, 15), date(2018, 8, 8), date(2018, 8, 1), date(2018, 7, 25))
"""Training-week starts of the four test folds whose mean ± std the benchmark reports."""
PREQUENTIAL_VALIDATION_STARTS = (date(2018, 7, 11), date(2018, 7, 4), date(2018, 6, 27), date(2018, 6, 20))
"""Training-week starts of the folds on which hyper-parameters are chosen."""


@dataclass(frozen=True)
class Fold:
    """Row positions (into the frame) of one fold's training, validation and test transactions."""

    train_start: date
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


@dataclass
class FoldResult:
    """A fold, the model trained for it, its test logits and test metrics."""

    fold: Fold
    artifact: ModelArtifact
    logits: np.ndarray
    metrics: dict[str, float]

    @property
    def scores(self) -> np.ndarray:
        """The test scores (probabilities)."""
        return expit(self.logits)


def _day_number(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() // DAY)


def make_fold(frame: pd.DataFrame, train_start: date | str, train_days: int = 7, gap_days: int = 7, test_days: int = 7) -> Fold:
    """One fold: ``train_days`` from ``train_start``, a ``gap_days`` gap, then ``test_days`` of test.

    Validation is the ``train_days`` before the training week. Test day ``i`` drops every card with a fraud in
    the training week or on any day up to ``first test day - gap_days - 1 + i`` (the labels known by then).

    >>> frame = pd.DataFrame({"time": np.array([0.5, 7.5, 14.5, 14.6, 15.5]) * DAY,
    ...                       "card_id": ["a", "b", "b", "c", "c"], "label": [0, 1, 0, 0, 0]})
    >>> fold = make_fold(frame, date(1970, 1, 8), train_days=7, gap_days=0, test_days=7)
    >>> fold.valid.tolist(), fold.train.tolist(), fold.test.tolist()
    ([0], [1], [3, 4])
    """
    train_start = date.fromisoformat(train_start) if isinstance(train_start, str) else train_start
    days = np.floor(frame["time"].to_numpy(dtype=np.float64) / DAY).astype(np.int64)
    cards = frame["card_id"].to_numpy()
    fraud = frame["label"].to_numpy() == 1
    start = _day_number(train_start)
    train = (days >= start) & (days < start + train_days)
    known = set(cards[train & fraud])
    first_test = start + train_days + gap_days
    test_parts = []
    for offset in range(test_days):
        known.update(cards[fraud & (days == first_test - gap_days - 1 + offset)])
        on_day = np.flatnonzero(days == first_test + offset)
        test_parts.append(on_day[~np.isin(cards[on_day], list(known))])
    return Fold(
        train_start=train_start,
        train=np.flatnonzero(train),
        valid=np.flatnonzero((days >= start - train_days) & (days < start)),
        test=np.concatenate(test_parts),
    )


def baseline_split(frame: pd.DataFrame, train_start: date | str = BASELINE_TRAIN_START) -> Fold:
    """The handbook's single split: train 2018-07-25 … 07-31, test 2018-08-08 … 08-14."""
    return make_fold(frame, train_start)


def prequential_folds(frame: pd.DataFrame, fold_starts: Sequence[date | str] = PREQUENTIAL_TEST_STARTS) -> list[Fold]:
    """One fold per training-week start (the benchmark's four test folds by default)."""
    return [make_fold(frame, start) for start in fold_starts]


def protocol_folds(frame: pd.DataFrame, protocol: Protocol = "prequential", fold_starts: Sequence[date | str] | None = None) -> list[Fold]:
    """The folds of a protocol; ``fold_starts`` (dates or ISO strings) override the default training-week starts."""
    if protocol == "baseline":
        return [baseline_split(frame, *(fold_starts or ())[:1])]
    if protocol == "prequential":
        return prequential_folds(frame, fold_starts or PREQUENTIAL_TEST_STARTS)
    raise ModelError(f"unknown protocol {protocol!r}: expected 'prequential' or 'baseline'")


def run_folds(
    frame: pd.DataFrame,
    features: ModelInputs,
    folds: Sequence[Fold],
    config: TrainConfig = TrainConfig(),
    *,
    label_delay_days: float = DEFAULT_LABEL_DELAY_DAYS,
    progress: bool = False,
) -> list[FoldResult]:
    """Train one model per fold with :func:`models.train.fit` and score its test week."""
    labels = frame["label"].to_numpy()
    times = frame["time"].to_numpy(dtype=np.float64)
    results = []
    for fold in folds:
        if len(fold.test) == 0:
            raise ModelError(f"fold starting {fold.train_start} has no test transactions")
        artifact = fit(
            features[fold.train],
            labels[fold.train],
            features[fold.valid],
            labels[fold.valid],
            FEATURE_NAMES,
            config,
            label_delay_days=label_delay_days,
            data_range=time_range(times[fold.train]),
            progress=progress,
        )
        logits = artifact.predict_logit(features[fold.test])
        metrics = detection_metrics(frame.iloc[fold.test], expit(logits))
        logger.info("fold %s: %s", fold.train_start, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        results.append(FoldResult(fold, artifact, logits, metrics))
    return results


def summarize(results: Sequence[FoldResult], labels: np.ndarray) -> dict:
    """``{"folds": [...], "mean": {...}, "std": {...}}`` of fold results (std is the population std)."""
    folds = [
        {
            "train_start": result.fold.train_start.isoformat(),
            **result.metrics,
            "n_train": len(result.fold.train),
            "n_train_fraud": int(labels[result.fold.train].sum()),
            "n_test": len(result.fold.test),
            "n_test_fraud": int(labels[result.fold.test].sum()),
            "best_epoch": result.artifact.params["best_epoch"],
            "threshold": result.artifact.threshold,
            "threshold_logit": result.artifact.threshold_logit,
        }
        for result in results
    ]
    names = list(results[0].metrics) if results else []
    return {
        "folds": folds,
        "mean": {name: float(np.mean([fold[name] for fold in folds])) for name in names},
        "std": {name: float(np.std([fold[name] for fold in folds])) for name in names},
    }


def evaluate(
    frame: pd.DataFrame,
    features: ModelInputs,
    protocol: Protocol = "prequential",
    fold_starts: Sequence[date | str] | None = None,
    config: TrainConfig = TrainConfig(),
    *,
    progress: bool = False,
) -> dict:
    """Run a protocol end to end and return the per-fold metrics with their mean and std."""
    started = time.perf_counter()
    results = run_folds(frame, features, protocol_folds(frame, protocol, fold_starts), config, progress=progress)
    summary = summarize(results, frame["label"].to_numpy())
    summary.update(protocol=protocol, seconds=round(time.perf_counter() - started, 1))
    return summary
