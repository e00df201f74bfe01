"""Stored model inputs for retraining and replay: decisions with their features, sequences and known labels.

Reads the writer's segments like every reader (safe while the writer runs). ``labels_as_of`` makes a read
point-in-time correct: only labels that had arrived by then count, by the store's own arrival time
(``received_at``) or, for history replayed into a store after the fact, by the time the sender reported them
(``reported_at``); the latest of those per transaction is its label.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

import pyarrow as pa

from audit.exceptions import AuditError
from audit.reader import connect, run
from audit.views import segment_scan

__all__ = ["LabelClock", "stored_inputs"]

LabelClock = Literal["received", "reported"]
"""Which time says when a label became known: the store's arrival stamp, or the sender's report time."""

_INPUTS = """
SELECT d.tx_id, d.event_time, d.card_id, d.model_version, d.decided_at, coalesce(d.batch_id, 0) AS batch_id, d.batch_row,
       d.score_logit, d.threshold, d.threshold_logit, d.is_alert,
       d.features, d.sequence, l.is_fraud AS label{in_range}
FROM {decisions} AS d LEFT JOIN (
    SELECT tx_id, is_fraud FROM {labels} WHERE {known}
    QUALIFY row_number() OVER (PARTITION BY tx_id ORDER BY reported_at DESC, received_at DESC, seq DESC) = 1
) AS l USING (tx_id)
WHERE {scope}
ORDER BY d.event_time, d.tx_id
"""
_IN_RANGE = "d.event_time >= $since AND d.event_time <= $until"
# A scoring batch is one model call: every decision of a batch that has one in the range (see models.rescore).
_BATCH = "(d.model_version, d.decided_at, coalesce(d.batch_id, 0))"
_WHOLE_BATCHES = f"{_BATCH} IN (SELECT {_BATCH} FROM {{decisions}} AS d WHERE {_IN_RANGE})"


def stored_inputs(
    root: str | Path,
    since: datetime = datetime.min,
    until: datetime = datetime.max,
    labels_as_of: datetime | None = None,
    label_clock: LabelClock = "received",
    whole_batches: bool = False,
) -> pa.Table:
    """Decisions with ``since <= event_time <= until`` (naive UTC), in event-time order, with their label.

    Columns: ``tx_id, event_time, card_id, model_version, decided_at, batch_id, score_logit, threshold,
    threshold_logit`` (NULL for decisions stored before it was kept), ``is_alert,
    features`` (in the model's feature order), ``sequence`` (float32, empty for decisions stored before it
    was kept), ``batch_id`` (0 for decisions stored without one), ``batch_row`` and ``label`` (the latest verdict known at ``labels_as_of``, NULL when none; every label when
    ``labels_as_of`` is None). With ``whole_batches``, every decision of a scoring batch that has one in the range,
    and ``in_range`` saying which are: a replay scores each batch whole, as the worker did.
    """
    if label_clock not in ("received", "reported"):
        raise AuditError(f"label_clock must be 'received' or 'reported', not {label_clock!r}")
    root = Path(root).absolute()
    known = "true" if labels_as_of is None else f"{label_clock}_at <= $as_of"
    decisions = segment_scan(root, "decisions")
    sql = _INPUTS.format(
        decisions=decisions,
        labels=segment_scan(root, "labels"),
        known=known,
        in_range=f", {_IN_RANGE} AS in_range" if whole_batches else "",
        scope=_WHOLE_BATCHES.format(decisions=decisions) if whole_batches else _IN_RANGE,
    )
    parameters: dict[str, object] = {"since": since, "until": until}
    if labels_as_of is not None:
        parameters["as_of"] = labels_as_of
    with connect(root) as con:  # checks the store exists
        return run(con, sql, parameters)
