"""The simulator keeps the handbook's layout and generative process, and is reproducible from its seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from models.exceptions import ModelError
from models.simulate import COLUMNS, simulate, simulate_profiles, write_parquet

# Fraud counts per day are absolute (2 terminals, 3 customers), so the fraud share falls as the population
# grows: 1,000 customers over 40 days land in the handbook's range, where 300 customers would give about 4 %.
ARGS = {"n_customers": 1000, "n_terminals": 5000, "n_days": 40, "radius": 5.0, "seed": 7}
SMALL = {"n_customers": 300, "n_terminals": 600, "n_days": 20}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return simulate(**ARGS)


def test_columns_and_types_are_the_handbook_raw_layout(frame: pd.DataFrame) -> None:
    assert tuple(frame.columns) == COLUMNS
    assert frame["TX_DATETIME"].dtype == np.dtype("datetime64[ns]")
    assert frame["TX_AMOUNT"].dtype == np.float64
    others = [column for column in COLUMNS if column not in ("TX_DATETIME", "TX_AMOUNT")]
    assert all(frame[column].dtype == np.int64 for column in others)
    assert isinstance(frame.index, pd.RangeIndex)


def test_rows_are_in_time_order_and_numbered(frame: pd.DataFrame) -> None:
    assert len(frame) > 50_000
    assert (frame["TRANSACTION_ID"].to_numpy() == np.arange(len(frame))).all()
    assert frame["TX_TIME_SECONDS"].is_monotonic_increasing
    seconds = frame["TX_TIME_SECONDS"].to_numpy()
    assert (frame["TX_TIME_DAYS"].to_numpy() == seconds // 86_400).all()
    offsets = (frame["TX_DATETIME"] - pd.Timestamp("2018-04-01")).dt.total_seconds().to_numpy()
    assert (offsets == seconds).all()
    assert frame["TX_TIME_DAYS"].min() == 0 and frame["TX_TIME_DAYS"].max() == ARGS["n_days"] - 1


def test_time_of_day_is_centred_on_noon(frame: pd.DataFrame) -> None:
    time_of_day = frame["TX_TIME_SECONDS"] % 86_400
    assert abs(time_of_day.mean() - 43_200) < 300
    # Normal(43,200, 20,000) truncated to one day has a standard deviation near 18,200.
    assert 17_500 < time_of_day.std() < 19_000


def test_start_date_moves_the_datetimes_only() -> None:
    default, later = simulate(**SMALL), simulate(**SMALL, start_date="2020-02-28")
    assert str(later["TX_DATETIME"].min().date()) == "2020-02-28"
    assert (later["TX_DATETIME"] - default["TX_DATETIME"]).nunique() == 1
    pd.testing.assert_frame_equal(later.drop(columns="TX_DATETIME"), default.drop(columns="TX_DATETIME"))


def test_same_seed_same_frame_other_seed_other_frame() -> None:
    pd.testing.assert_frame_equal(simulate(**SMALL, seed=3), simulate(**SMALL, seed=3))
    assert not simulate(**SMALL, seed=3).equals(simulate(**SMALL, seed=4))


def test_fraud_share_and_labels(frame: pd.DataFrame) -> None:
    assert 0.003 < frame["TX_FRAUD"].mean() < 0.03
    assert (frame["TX_FRAUD"] == (frame["TX_FRAUD_SCENARIO"] > 0)).all()
    assert set(frame["TX_FRAUD_SCENARIO"].unique()) == {0, 1, 2, 3}


def test_amounts_are_non_negative_cents_and_follow_the_scenarios(frame: pd.DataFrame) -> None:
    amount, scenario = frame["TX_AMOUNT"], frame["TX_FRAUD_SCENARIO"]
    assert (amount >= 0).all()
    assert np.allclose(amount * 100, np.round(amount * 100))
    assert (amount[scenario == 1] > 220).all()
    assert (amount[scenario == 0] <= 220).all()  # anything above 220 is at least scenario 1
    genuine = amount[scenario == 0].mean()
    assert 0.8 < amount[scenario == 2].mean() / genuine < 1.25  # compromised terminals keep amounts
    assert 3.5 < amount[scenario == 3].mean() / genuine < 7  # compromised cards spend five times more


def test_compromised_customers_lose_about_a_third(frame: pd.DataFrame) -> None:
    victims = frame.loc[frame["TX_FRAUD_SCENARIO"] == 3, "CUSTOMER_ID"].unique()
    assert ARGS["n_days"] <= len(victims) <= 3 * ARGS["n_days"]
    first = frame[frame["TX_FRAUD_SCENARIO"] == 3].groupby("CUSTOMER_ID")["TX_TIME_DAYS"].min()
    window = frame[frame["CUSTOMER_ID"].isin(victims)].join(first.rename("first"), on="CUSTOMER_ID")
    window = window[(window["TX_TIME_DAYS"] >= window["first"]) & (window["TX_TIME_DAYS"] < window["first"] + 14)]
    assert 0.2 < (window["TX_FRAUD_SCENARIO"] == 3).mean() < 0.45


def test_terminals_are_within_the_radius_of_their_customer(frame: pd.DataFrame) -> None:
    profiles = simulate_profiles(ARGS["n_customers"], ARGS["n_terminals"], ARGS["radius"], ARGS["seed"])
    customers = profiles.customers.set_index("CUSTOMER_ID")
    terminals = profiles.terminals.set_index("TERMINAL_ID")
    customer_xy = customers.loc[frame["CUSTOMER_ID"], ["X", "Y"]].to_numpy()
    terminal_xy = terminals.loc[frame["TERMINAL_ID"], ["X", "Y"]].to_numpy()
    assert (np.hypot(*(customer_xy - terminal_xy).T) < ARGS["radius"]).all()
    # Available terminals are exactly those in the radius, recomputed here by brute force for a few customers.
    for customer in customers.index[:50]:
        distance = np.hypot(terminals["X"] - customers.at[customer, "X"], terminals["Y"] - customers.at[customer, "Y"])
        expected = terminals.index[distance < ARGS["radius"]].to_numpy()
        assert np.array_equal(customers.at[customer, "AVAILABLE_TERMINALS"], expected)
    assert (customers["NB_TERMINALS"] == customers["AVAILABLE_TERMINALS"].map(len)).all()
    # A customer with no terminal in reach makes no transaction.
    silent = set(customers.index[customers["NB_TERMINALS"] == 0])
    assert silent.isdisjoint(frame["CUSTOMER_ID"].unique())


def test_profiles_follow_the_handbook_distributions() -> None:
    customers = simulate_profiles(n_customers=2000, n_terminals=10, seed=1).customers
    assert customers[["X", "Y"]].stack().between(0, 100).all()
    assert customers["MEAN_AMOUNT"].between(5, 100).all()
    assert np.allclose(customers["STD_AMOUNT"], customers["MEAN_AMOUNT"] / 2)
    assert customers["MEAN_NB_TX_PER_DAY"].between(0, 4).all()
    assert abs(customers["MEAN_NB_TX_PER_DAY"].mean() - 2) < 0.15


def test_write_parquet_round_trips_with_zstd(tmp_path, frame: pd.DataFrame) -> None:
    written = write_parquet(frame.head(1000), tmp_path / "nested" / "folder" / "tx.parquet")
    assert written.exists()
    pd.testing.assert_frame_equal(pd.read_parquet(written), frame.head(1000))
    assert pq.ParquetFile(written).metadata.row_group(0).column(0).compression == "ZSTD"


def test_write_parquet_reports_an_unwritable_path(tmp_path, frame: pd.DataFrame) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelError, match="cannot write"):
        write_parquet(frame.head(10), blocker / "tx.parquet")


@pytest.mark.parametrize(
    "bad", [{"n_customers": 0}, {"n_terminals": 0}, {"n_days": 0}, {"radius": 0.0}, {"radius": float("nan")}]
)
def test_rejects_empty_or_degenerate_arguments(bad: dict) -> None:
    with pytest.raises(ValueError):
        simulate(**{**SMALL, **bad})
