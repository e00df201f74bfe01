"""Replay: stored decisions scored again, offline, from the exact inputs they were scored with.

Each decision holds its model's whole input (features and card sequence as the worker computed them from the
state of that moment), so replaying needs no state rebuilt. The model's float32 arithmetic gives a row a
result that can differ in the last bits with the size of the batch it is computed in, so decisions are scored
again in the batches they were made in, row for row (their ``batch_id`` and ``batch_row``; for decisions stored
without them, their model version and ``decided_at``): with the model that made them, every score comes back
to the bit. The worker scores with one intra-op thread (``stream.app.Serving``), and so does a replay: the way a
product is split between threads changes its rounding too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from models.network import ModelArtifact, ModelInputs, logit_threshold

__all__ = ["LOGIT_TOLERANCE", "ReplayReport", "rescore", "stored_threshold_logits"]

LOGIT_TOLERANCE = 1e-9
"""A replayed score differing from the stored one by more than this (in log-odds) counts as changed."""


@dataclass
class ReplayReport:
    """How many decisions a replay would change, overall and by the model version that made them.

    A decision changes when its score moves by more than the tolerance (log-odds) or its alert outcome flips.
    """

    model: str
    decisions: int = 0
    changed: int = 0
    scores_changed: int = 0
    alerts_changed: int = 0
    new_alerts: int = 0
    dropped_alerts: int = 0
    max_logit_gap: float = 0.0
    skipped: int = 0
    by_version: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def matched(self) -> float:
        """Share of the replayed decisions that came back unchanged."""
        return 1.0 - self.changed / self.decisions if self.decisions else 1.0

    def add(self, version: str, counts: dict[str, int], max_logit_gap: float) -> None:
        mine = self.by_version.setdefault(version, dict.fromkeys(counts, 0))
        for key, value in counts.items():
            mine[key] += value
            setattr(self, key, getattr(self, key) + value)
        self.max_logit_gap = max(self.max_logit_gap, max_logit_gap)

    def to_dict(self) -> dict:
        return asdict(self) | {"matched": self.matched}


def stored_threshold_logits(frame: pd.DataFrame) -> np.ndarray:
    """Each stored decision's alert threshold as a logit: its ``threshold_logit``, or for a decision stored before
    it was kept (or a frame without the column) the logit threshold of its probability, which alerts as it did.

    >>> frame = pd.DataFrame({"threshold": [0.42, 1.0, 1.0], "threshold_logit": [None, None, 40.0]})
    >>> stored_threshold_logits(frame).round(2).tolist()
    [-0.32, 36.74, 40.0]
    """
    stored = np.full(len(frame), np.nan)
    if "threshold_logit" in frame:
        stored[:] = frame["threshold_logit"].to_numpy(dtype=np.float64, na_value=np.nan)
    missing = np.isnan(stored)
    probabilities = frame["threshold"].to_numpy(dtype=np.float64)[missing].tolist()
    limits = {probability: logit_threshold(probability) for probability in set(probabilities)}  # few, over many rows
    stored[missing] = [limits[probability] for probability in probabilities]
    return stored


def rescore(
    frame: pd.DataFrame,
    inputs: ModelInputs,
    load: Callable[[str], ModelArtifact],
    model: str | None = None,
    tolerance: float = LOGIT_TOLERANCE,
) -> ReplayReport:
    """Score ``frame``'s decisions again with ``model`` (each one's own ``model_version`` when None).

    ``frame`` has ``model_version, decided_at, batch_id, batch_row, score_logit, threshold, is_alert`` (and
    ``threshold_logit``: :func:`stored_threshold_logits`) per row of ``inputs`` (``models.challenge.StoredRows``); ``load`` gives a registry version's artifact. With its own model a
    decision keeps its stored threshold; with another it takes that model's. When ``frame`` has ``in_range``, its
    batches are scored whole and only the rows in range counted: a batch cut by the range would be a smaller
    product than the worker's, rounded differently in its last bits.
    """
    report = ReplayReport(model=model or "own")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _rescore_batches(report, frame, inputs, load, model, tolerance)
    finally:
        torch.set_num_threads(threads)
    return report


def _rescore_batches(
    report: ReplayReport, frame: pd.DataFrame, inputs: ModelInputs, load: Callable[[str], ModelArtifact], model: str | None, tolerance: float
) -> None:
    artifacts: dict[str, ModelArtifact] = {}
    stored_logits = frame["score_logit"].to_numpy(dtype=np.float64)
    thresholds = stored_threshold_logits(frame)
    were_alerts = frame["is_alert"].to_numpy(dtype=bool)
    counted = frame["in_range"].to_numpy(dtype=bool) if "in_range" in frame else np.ones(len(frame), dtype=bool)
    batches = frame.groupby(["model_version", "decided_at", "batch_id"], sort=False, dropna=False).indices
    positions = frame["batch_row"].to_numpy(dtype=np.float64, na_value=np.nan)
    for (version, _decided_at, _batch), rows in batches.items():
        rows = rows[np.argsort(positions[rows], kind="stable")]  # the batch's own order (NaN rows last, as stored)
        name = model or version
        if name not in artifacts:
            artifacts[name] = load(name)
        logits = artifacts[name].predict_logit(inputs[rows])
        logits, rows = logits[counted[rows]], rows[counted[rows]]
        if not len(rows):
            continue
        alerts = logits >= thresholds[rows] if name == version else artifacts[name].alerts(logits)
        was_alert = were_alerts[rows]
        gaps = np.abs(logits - stored_logits[rows])
        counts = {
            "decisions": len(rows),
            "changed": int(((gaps > tolerance) | (alerts != was_alert)).sum()),
            "scores_changed": int((gaps > tolerance).sum()),
            "alerts_changed": int((alerts != was_alert).sum()),
            "new_alerts": int((alerts & ~was_alert).sum()),
            "dropped_alerts": int((~alerts & was_alert).sum()),
        }
        report.add(version, counts, float(gaps.max()))
