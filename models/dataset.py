"""Transactions in the handbook's raw layout, read into the one frame the rest of models/ uses.

Any Parquet file with the handbook's columns works, whatever the types of its id columns: ids become
strings (as they are on the stream) and times become epoch seconds in UTC.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from models.exceptions import DatasetError

RAW_COLUMNS = ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT")
"""Columns a raw transaction file must have; TX_FRAUD and TX_FRAUD_SCENARIO are read when present."""


def normalize(raw: pd.DataFrame) -> pd.DataFrame:
    """Rename and type the handbook's raw columns, sorted by event time.

    Returns columns ``tx_id, time, card_id, terminal_id, amount`` and, when the file has them,
    ``label`` (1 = fraud) and ``scenario`` (ground truth for analysis only, never a model input).

    >>> raw = pd.DataFrame({"TRANSACTION_ID": [1, 0], "TX_DATETIME": pd.to_datetime(["2018-04-01 00:00:10", "2018-04-01 00:00:00"]),
    ...                     "CUSTOMER_ID": [7, 7], "TERMINAL_ID": [3, 4], "TX_AMOUNT": [5.0, 2.5]})
    >>> normalize(raw)[["tx_id", "time", "card_id"]].values.tolist()
    [['0', 1522540800.0, '7'], ['1', 1522540810.0, '7']]
    """
    missing = [column for column in RAW_COLUMNS if column not in raw.columns]
    if missing:
        raise DatasetError(f"transaction file lacks column(s) {', '.join(missing)}")
    times = pd.to_datetime(raw["TX_DATETIME"])
    if times.dt.tz is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    frame = pd.DataFrame(
        {
            "tx_id": raw["TRANSACTION_ID"].astype(str).to_numpy(dtype=object),
            "time": times.to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9,
            "card_id": raw["CUSTOMER_ID"].astype(str).to_numpy(dtype=object),
            "terminal_id": raw["TERMINAL_ID"].astype(str).to_numpy(dtype=object),
            "amount": raw["TX_AMOUNT"].astype(np.float64).to_numpy(),
        }
    )
    if "TX_FRAUD" in raw.columns:
        frame["label"] = raw["TX_FRAUD"].astype(np.int8).to_numpy()
    if "TX_FRAUD_SCENARIO" in raw.columns:
        frame["scenario"] = raw["TX_FRAUD_SCENARIO"].astype(np.int8).to_numpy()
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def load_transactions(path: str | Path) -> pd.DataFrame:
    """Read a raw transaction Parquet file and :func:`normalize` it."""
    try:
        raw = pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot read transactions from {path}: {error}") from error
    return normalize(raw)


__all__ = ["RAW_COLUMNS", "load_transactions", "normalize"]
