"""The incremental features equal the handbook's definitions, computed here with pandas rolling windows.

Only the test re-derives the features this way; training and scoring use models.features alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.dataset import load_transactions
from models.features import DEFAULT_LABEL_DELAY_DAYS, FEATURE_NAMES, WINDOWS_DAYS
from models.replay import replay_features

HANDBOOK = Path(__file__).resolve().parents[3] / "shared" / "data" / "handbook_raw.parquet"


def _rolling(frame: pd.DataFrame, key: str, column: str, days: int, how: str) -> np.ndarray:
    ordered = frame.sort_values([key, "when"], kind="stable")
    rolled = getattr(ordered.set_index("when").groupby(key, sort=False)[column].rolling(f"{days}D"), how)()
    return pd.Series(rolled.to_numpy(), index=ordered.index).sort_index().to_numpy()


def handbook_features(frame: pd.DataFrame, delay: int = DEFAULT_LABEL_DELAY_DAYS) -> dict[str, np.ndarray]:
    frame = frame.assign(when=pd.to_datetime(frame["time"], unit="s"))
    reference = {}
    for days in WINDOWS_DAYS:
        count = _rolling(frame, "card_id", "amount", days, "count")
        reference[f"card_tx_count_{days}d"] = count
        reference[f"card_avg_amount_{days}d"] = _rolling(frame, "card_id", "amount", days, "sum") / count
        n_window = _rolling(frame, "terminal_id", "label", delay + days, "count") - _rolling(frame, "terminal_id", "label", delay, "count")
        frauds = _rolling(frame, "terminal_id", "label", delay + days, "sum") - _rolling(frame, "terminal_id", "label", delay, "sum")
        reference[f"terminal_tx_count_{days}d"] = n_window
        reference[f"terminal_fraud_rate_{days}d"] = np.where(n_window > 0, frauds / np.maximum(n_window, 1), 0.0)
    when = pd.to_datetime(frame["time"], unit="s")
    reference["amount"] = frame["amount"].to_numpy()
    reference["is_weekend"] = (when.dt.day_of_week >= 5).astype(float).to_numpy()
    reference["is_night"] = (when.dt.hour <= 6).astype(float).to_numpy()
    return reference


def test_replayed_features_equal_the_handbook_definitions(small_frame: pd.DataFrame) -> None:
    features = replay_features(small_frame)
    reference = handbook_features(small_frame)
    assert set(reference) == set(FEATURE_NAMES)
    for name, expected in reference.items():
        np.testing.assert_allclose(features[:, FEATURE_NAMES.index(name)], expected, rtol=0, atol=1e-9, err_msg=name)


@pytest.mark.skipif(not HANDBOOK.exists(), reason="the handbook data set is not beside this checkout")
def test_replayed_features_equal_the_handbook_definitions_on_its_data() -> None:
    frame = load_transactions(HANDBOOK)
    frame = frame[frame["time"] < frame["time"].min() + 38 * 86_400].reset_index(drop=True)
    features = replay_features(frame)
    for name, expected in handbook_features(frame).items():
        np.testing.assert_allclose(features[:, FEATURE_NAMES.index(name)], expected, rtol=0, atol=1e-9, err_msg=name)
