"""The offline feature path: history replayed in event-time order through the stream's own state code.

Training and evaluation compute features here, with the same :mod:`models.features` steps the worker runs,
so a model never sees a value it could not have seen live. Fraud labels are replayed as feedback events
arriving ``label_delay_days`` after their transaction (the handbook's assumption); a label is applied before
any transaction with the same or a later time, exactly as the worker applies feedback before the
transactions that follow it on the terminal's partition.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from models.exceptions import DatasetError
from models.network import ModelInputs
from models.features import (
    DAY,
    DEFAULT_LABEL_DELAY_DAYS,
    FEATURE_NAMES,
    SEQUENCE_LENGTH,
    SEQUENCE_STEP,
    CardState,
    TerminalState,
    card_step,
    feature_vector,
    terminal_step,
)


def replay_features(
    frame: pd.DataFrame,
    label_delay_days: float = DEFAULT_LABEL_DELAY_DAYS,
    progress: bool = False,
) -> ModelInputs:
    """Model inputs of a normalized frame: features (columns in ``FEATURE_NAMES`` order) and card sequences,
    rows in ``frame`` order.

    ``frame`` comes from :func:`models.dataset.normalize`, sorted by time. Its ``label`` column, when present,
    is replayed as delayed feedback; the label of a transaction never reaches its own features.

    >>> frame = pd.DataFrame({"tx_id": ["a", "b"], "time": [0.0, 7.5 * DAY], "card_id": ["c", "c"],
    ...                       "terminal_id": ["t", "t"], "amount": [10.0, 30.0], "label": [1, 0]})
    >>> inputs = replay_features(frame)
    >>> dict(zip(FEATURE_NAMES, inputs.features[1].tolist()))["terminal_fraud_rate_1d"]
    1.0
    >>> inputs.sequences.shape
    (2, 8, 4)
    """
    times = frame["time"].to_numpy(dtype=np.float64)
    if len(times) > 1 and np.any(np.diff(times) < 0):
        raise DatasetError("replay_features needs a frame sorted by time")
    tx_ids = frame["tx_id"].to_numpy(dtype=object)
    cards = frame["card_id"].to_numpy(dtype=object)
    terminals = frame["terminal_id"].to_numpy(dtype=object)
    amounts = frame["amount"].to_numpy(dtype=np.float64)

    if "label" in frame.columns:
        fraud_rows = np.flatnonzero(frame["label"].to_numpy() == 1)
    else:
        fraud_rows = np.empty(0, dtype=np.int64)
    label_times = times[fraud_rows] + label_delay_days * DAY

    card_states: defaultdict[str, CardState] = defaultdict(CardState)
    terminal_states: defaultdict[str, TerminalState] = defaultdict(TerminalState)
    out = np.empty((len(frame), len(FEATURE_NAMES)), dtype=np.float64)
    sequences = np.empty((len(frame), SEQUENCE_LENGTH * len(SEQUENCE_STEP)), dtype=np.float32)
    next_label = 0
    for row in tqdm(range(len(frame)), disable=not progress, desc="features", unit="tx", mininterval=1.0):
        time = times[row]
        while next_label < len(fraud_rows) and label_times[next_label] <= time:
            labelled = fraud_rows[next_label]
            terminal_states[terminals[labelled]].label(tx_ids[labelled], True, label_times[next_label])
            next_label += 1
        card = card_step(card_states[cards[row]], time, amounts[row], tx_ids[row], terminals[row])
        terminal = terminal_step(terminal_states[terminals[row]], time, tx_ids[row], amounts[row], card.features, label_delay_days)
        out[row] = feature_vector(time, amounts[row], card.features, terminal)
        sequences[row] = card.sequence
    return ModelInputs(out, sequences.reshape(len(frame), SEQUENCE_LENGTH, len(SEQUENCE_STEP)))


def replay_card_states(frame: pd.DataFrame) -> dict[str, CardState]:
    """Each card's state after all of ``frame`` (sorted by time): what the worker's card table holds at the end of
    an uninterrupted run of the same transactions.

    >>> frame = pd.DataFrame({"tx_id": ["a", "b"], "time": [0.0, 60.0], "card_id": ["c", "c"],
    ...                       "terminal_id": ["t", "u"], "amount": [10.0, 30.0]})
    >>> replay_card_states(frame)["c"].tx_ids
    ['a', 'b']
    """
    states: defaultdict[str, CardState] = defaultdict(CardState)
    for tx_id, time, card, terminal, amount in frame[["tx_id", "time", "card_id", "terminal_id", "amount"]].itertuples(index=False):
        card_step(states[str(card)], float(time), float(amount), str(tx_id), str(terminal))
    return dict(states)


__all__ = ["replay_card_states", "replay_features"]
