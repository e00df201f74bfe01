"""Retraining from stored decisions: a point-in-time training set, a challenger, and its duel with the champion.

The rows are decisions as the audit store holds them (``audit.inputs.stored_inputs``): each carries the exact
model input it was scored with, so nothing is recomputed and training sees what serving saw. Labels are those
known at the cut-off. Frauds are reported, genuine transactions mostly are not, so a decision at least the
label delay old without a fraud report counts as genuine, and a younger one without a verdict is left out
(its report may still be on its way). The most recent ``eval_days`` labelled days are held out: the
challenger trains (with :func:`models.train.train_from_frame`) on the days before them, and both models are
scored on them with the handbook's metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from models.exceptions import ModelError
from models.features import DAY, FEATURE_NAMES, SEQUENCE_LENGTH, SEQUENCE_STEP
from models.metrics import detection_metrics
from models.network import ModelArtifact, ModelInputs
from models.train import TrainConfig, labels_known_by, time_range, train_from_frame

logger = logging.getLogger(__name__)

__all__ = ["StoredRows", "challenge", "stored_rows"]


@dataclass(frozen=True)
class StoredRows:
    """Stored decisions as a frame (``tx_id, time`` in epoch seconds, ``card_id, model_version, decided_at,
    score_logit, threshold, threshold_logit, is_alert, label``) and their model inputs, row for row; ``skipped`` counts stored
    decisions without a whole input (kept before sequences were stored), which are left out."""

    frame: pd.DataFrame
    inputs: ModelInputs
    skipped: int


def _matrix(column: pa.ChunkedArray, width: int, dtype: type) -> np.ndarray:
    values = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=dtype).reshape(-1, width)


def stored_rows(table: pa.Table, n_features: int = len(FEATURE_NAMES)) -> StoredRows:
    """Frame and :class:`ModelInputs` of stored decisions (see ``audit.inputs.stored_inputs``).

    >>> table = pa.table({"tx_id": ["a", "b"], "event_time": pa.array([0, 86_400_000], pa.timestamp("ms")),
    ...                   "features": [[1.0, 2.0], [3.0, 4.0]], "sequence": [[0.5] * 32, []], "label": [True, None]})
    >>> rows = stored_rows(table, n_features=2)
    >>> rows.frame["tx_id"].tolist(), rows.inputs.sequences.shape, rows.skipped
    (['a'], (1, 8, 4), 1)
    """
    step = SEQUENCE_LENGTH * len(SEQUENCE_STEP)
    whole = pc.and_(
        pc.equal(pc.list_value_length(table.column("features")), n_features),
        pc.equal(pc.list_value_length(table.column("sequence")), step),
    )
    kept = table.filter(pc.fill_null(whole, False))
    frame = kept.drop_columns(["features", "sequence"]).to_pandas()
    frame["time"] = frame.pop("event_time").astype("datetime64[ms]").astype(np.int64) / 1000.0
    inputs = ModelInputs(
        _matrix(kept.column("features"), n_features, np.float64),
        _matrix(kept.column("sequence"), step, np.float32).reshape(-1, SEQUENCE_LENGTH, len(SEQUENCE_STEP)),
    )
    return StoredRows(frame, inputs, table.num_rows - kept.num_rows)


def challenge(
    rows: StoredRows,
    champion: ModelArtifact,
    as_of: datetime,
    *,
    eval_days: int = 7,
    valid_days: int = 7,
    warmup_days: int = 7,
    config: TrainConfig = TrainConfig(),
) -> tuple[ModelArtifact, dict]:
    """Train a challenger on the labelled days before the evaluation window and score both models on it.

    ``rows`` hold decisions up to ``as_of`` with the labels known then. Returns the challenger and the
    ``challenge`` record for its manifest: ``as_of``, ``champion``, ``champion_metrics``,
    ``challenger_metrics`` (``auc``, ``ap``, ``cp_at_100``), ``window`` and row counts.
    """
    if tuple(champion.feature_names) != tuple(FEATURE_NAMES):
        raise ModelError(f"champion {champion.version} reads other features than the stored decisions hold")
    cutoff = as_of.astimezone(timezone.utc).timestamp()
    frame = rows.frame.assign(label=labels_known_by(rows.frame, cutoff, champion.label_delay_days))
    days = np.floor(frame["time"].to_numpy() / DAY).astype(np.int64)
    labelled = frame["label"].notna().to_numpy()
    if not labelled.any() or not (frame.loc[labelled, "label"] == 1).any():
        raise ModelError(f"no fraud labels known by {as_of.isoformat()}: nothing to train or evaluate on")
    window_start = days[labelled].max() - eval_days + 1
    held_out = labelled & (days >= window_start)
    before = days < window_start
    challenger = train_from_frame(
        frame[before].reset_index(drop=True),
        rows.inputs[before],
        valid_days=valid_days,
        warmup_days=warmup_days,
        label_delay_days=champion.label_delay_days,
        config=config,
    )
    window = frame[held_out]
    evaluation = {
        name: detection_metrics(window, model.predict_proba(rows.inputs[held_out]))
        for name, model in (("champion", champion), ("challenger", challenger))
    }
    span = time_range(window["time"].to_numpy())
    # ISO-8601 UTC strings of one format compare as the times they name
    champion_saw_window = bool(champion.data_range) and champion.data_range["end"] >= span["start"]
    if champion_saw_window:
        logger.warning("the champion %s trained or validated on part of the evaluation window (its data ends %s, the "
                       "window starts %s): its metrics there flatter it", champion.version, champion.data_range["end"], span["start"])
    record = {
        "as_of": as_of.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "champion": champion.version,
        "champion_metrics": evaluation["champion"],
        "challenger_metrics": evaluation["challenger"],
        "window": span,
        "champion_saw_window": champion_saw_window,
        "rows": {"stored": len(frame) + rows.skipped, "skipped": rows.skipped, "train_and_valid": int((labelled & before).sum()),
                 "evaluated": int(held_out.sum()), "evaluated_frauds": int((window["label"] == 1).sum())},
    }
    return challenger, record
