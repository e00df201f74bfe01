"""A seedable simulator of card transactions with labelled frauds, for demos and tests without real data.

It follows the generative process of the *Reproducible Machine Learning for Credit Card Fraud Detection –
Practical Handbook* (Le Borgne, Siblini, Lebichot, Bontempi; Université Libre de Bruxelles, 2022), chapter
"Transaction data simulator", re-implemented here with vectorised numpy draws:

- **Profiles.** Customers and terminals sit uniformly on a 100 × 100 grid. A customer spends U(5, 100) on
  average with a standard deviation of half that, and makes U(0, 4) transactions a day on average. Its
  available terminals are those closer than ``radius`` to it.
- **Transactions.** Each day, each customer makes Poisson(mean per day) transactions; the time of day is
  Normal(12:00, 20,000 s), dropped outside the day; the amount is Normal(mean, std), redrawn as
  U(0, 2 × mean) when negative, rounded to cents; the terminal is drawn uniformly among the available ones
  (a customer with none makes no transaction).
- **Frauds**, applied in this order, a later scenario overwriting an earlier one's label:
  1. every amount above 220 is fraud;
  2. each day, 2 random terminals are compromised for 28 days: all their transactions in that time are fraud;
  3. each day, 3 random customers are compromised for 14 days: a random third of their transactions in
     that time are fraud, with the amount multiplied by 5.

The output has the handbook's raw layout, so everything that reads the handbook's data reads it too. With
the defaults it has about 1.75 million transactions and a fraud share near the handbook's 0.84 %.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from models.exceptions import ModelError

__all__ = ["COLUMNS", "Profiles", "simulate", "simulate_profiles", "write_parquet"]

logger = logging.getLogger(__name__)

COLUMNS = (
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_TIME_SECONDS",
    "TX_TIME_DAYS",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
)
"""Columns of a simulated frame, in order: the handbook's raw layout."""

DAY_SECONDS = 86_400
GRID_SIZE = 100.0
MEAN_AMOUNT_RANGE = (5.0, 100.0)
MAX_MEAN_TX_PER_DAY = 4.0
TIME_OF_DAY_MEAN, TIME_OF_DAY_STD = DAY_SECONDS / 2, 20_000.0
FRAUD_AMOUNT_THRESHOLD = 220.0
COMPROMISED_TERMINALS_PER_DAY, TERMINAL_COMPROMISE_DAYS = 2, 28
COMPROMISED_CUSTOMERS_PER_DAY, CUSTOMER_COMPROMISE_DAYS = 3, 14
CUSTOMER_FRAUD_ONE_IN = 3
CUSTOMER_FRAUD_AMOUNT_FACTOR = 5.0
_NEIGHBOUR_CHUNK = 256  # customers per block of the customer × terminal distance matrix


class _Draws(NamedTuple):
    """Profile arrays; customer ``c``'s terminals are ``terminal_ids[offsets[c]:offsets[c + 1]]``."""

    customer_xy: np.ndarray
    mean_amount: np.ndarray
    mean_tx_per_day: np.ndarray
    terminal_xy: np.ndarray
    offsets: np.ndarray
    terminal_ids: np.ndarray


@dataclass(frozen=True)
class Profiles:
    """The customers and terminals behind a simulation, for checks and plots.

    ``customers`` has CUSTOMER_ID, X, Y, MEAN_AMOUNT, STD_AMOUNT, MEAN_NB_TX_PER_DAY, NB_TERMINALS and
    AVAILABLE_TERMINALS (an array of terminal ids per customer); ``terminals`` has TERMINAL_ID, X, Y.
    """

    customers: pd.DataFrame
    terminals: pd.DataFrame


def _generators(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent streams for profiles, transactions and frauds, so each stage depends on the seed alone."""
    profiles, transactions, frauds = (np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(3))
    return profiles, transactions, frauds


def _check(n_customers: int, n_terminals: int, radius: float, n_days: int = 1) -> None:
    if n_customers < 1 or n_terminals < 1 or n_days < 1:
        raise ValueError(f"need at least one customer, terminal and day, got {n_customers}, {n_terminals}, {n_days}")
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius}")


def _draw_profiles(rng: np.random.Generator, n_customers: int, n_terminals: int, radius: float) -> _Draws:
    customer_xy = rng.uniform(0.0, GRID_SIZE, size=(n_customers, 2))
    mean_amount = rng.uniform(*MEAN_AMOUNT_RANGE, size=n_customers)
    mean_tx_per_day = rng.uniform(0.0, MAX_MEAN_TX_PER_DAY, size=n_customers)
    terminal_xy = rng.uniform(0.0, GRID_SIZE, size=(n_terminals, 2))
    # Brute force in blocks: np.nonzero walks each block row by row, so the pairs come out grouped by
    # customer with terminal ids ascending, which is the CSR layout directly.
    counts, ids = [], []
    for start in range(0, n_customers, _NEIGHBOUR_CHUNK):
        block = customer_xy[start : start + _NEIGHBOUR_CHUNK]
        squared = ((block[:, None, :] - terminal_xy[None, :, :]) ** 2).sum(axis=2)
        near = squared < radius * radius
        counts.append(near.sum(axis=1))
        ids.append(np.nonzero(near)[1])
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    return _Draws(customer_xy, mean_amount, mean_tx_per_day, terminal_xy, offsets, np.concatenate(ids).astype(np.int64))


def simulate_profiles(
    n_customers: int = 5000, n_terminals: int = 10000, radius: float = 5.0, seed: int = 0
) -> Profiles:
    """The customers and terminals that :func:`simulate` draws for the same arguments.

    >>> profiles = simulate_profiles(n_customers=3, n_terminals=10, seed=1)
    >>> len(profiles.customers), len(profiles.terminals)
    (3, 10)
    >>> bool((profiles.customers["STD_AMOUNT"] == profiles.customers["MEAN_AMOUNT"] / 2).all())
    True
    """
    _check(n_customers, n_terminals, radius)
    draws = _draw_profiles(_generators(seed)[0], n_customers, n_terminals, radius)
    available = np.split(draws.terminal_ids, draws.offsets[1:-1])
    customers = pd.DataFrame(
        {
            "CUSTOMER_ID": np.arange(n_customers, dtype=np.int64),
            "X": draws.customer_xy[:, 0],
            "Y": draws.customer_xy[:, 1],
            "MEAN_AMOUNT": draws.mean_amount,
            "STD_AMOUNT": draws.mean_amount / 2,
            "MEAN_NB_TX_PER_DAY": draws.mean_tx_per_day,
            "NB_TERMINALS": np.diff(draws.offsets),
            "AVAILABLE_TERMINALS": pd.Series(available, dtype=object),
        }
    )
    terminals = pd.DataFrame(
        {
            "TERMINAL_ID": np.arange(n_terminals, dtype=np.int64),
            "X": draws.terminal_xy[:, 0],
            "Y": draws.terminal_xy[:, 1],
        }
    )
    return Profiles(customers, terminals)


class _Transactions(NamedTuple):
    """Genuine transactions, ordered by (customer, day): the fraud scenarios rely on that order."""

    customer: np.ndarray
    terminal: np.ndarray
    day: np.ndarray
    seconds: np.ndarray
    amount: np.ndarray


def _draw_transactions(rng: np.random.Generator, draws: _Draws, n_days: int) -> _Transactions:
    n_customers = len(draws.mean_amount)
    per_day = rng.poisson(np.repeat(draws.mean_tx_per_day, n_days).reshape(n_customers, n_days))
    customer = np.repeat(np.arange(n_customers, dtype=np.int64), per_day.sum(axis=1))
    day = np.repeat(np.tile(np.arange(n_days, dtype=np.int64), n_customers), per_day.ravel())
    time_of_day = np.floor(rng.normal(TIME_OF_DAY_MEAN, TIME_OF_DAY_STD, size=len(customer))).astype(np.int64)
    mean = draws.mean_amount[customer]
    amount = rng.normal(mean, mean / 2)
    negative = amount < 0
    amount[negative] = rng.uniform(0.0, 2 * mean[negative])
    n_available = np.diff(draws.offsets)[customer]
    pick = np.floor(rng.random(len(customer)) * n_available).astype(np.int64)
    keep = (time_of_day >= 0) & (time_of_day < DAY_SECONDS) & (n_available > 0)
    customer, day = customer[keep], day[keep]
    return _Transactions(
        customer=customer,
        terminal=draws.terminal_ids[draws.offsets[customer] + pick[keep]],
        day=day,
        seconds=day * DAY_SECONDS + time_of_day[keep],
        amount=np.round(amount[keep], 2),
    )


def _compromised_terminals(rng: np.random.Generator, tx: _Transactions, n_terminals: int, n_days: int) -> np.ndarray:
    """Scenario 2: which transactions fall on a terminal within its compromised period."""
    compromised = np.zeros((n_terminals, n_days), dtype=bool)
    for day in range(n_days):
        chosen = rng.choice(n_terminals, size=min(COMPROMISED_TERMINALS_PER_DAY, n_terminals), replace=False)
        compromised[chosen, day : day + TERMINAL_COMPROMISE_DAYS] = True
    return compromised[tx.terminal, tx.day]


def _compromised_customers(rng: np.random.Generator, tx: _Transactions, n_customers: int, n_days: int) -> np.ndarray:
    """Scenario 3: pick a third of each day's compromised customers' transactions and scale their amounts.

    Multiplies ``tx.amount`` in place, day by day as the handbook does (a transaction picked on two days
    is scaled twice), and returns the mask of picked transactions.
    """
    picked = np.zeros(len(tx.amount), dtype=bool)
    key = tx.customer * n_days + tx.day  # ascending, since transactions are ordered by (customer, day)
    for day in range(n_days):
        chosen = rng.choice(n_customers, size=min(COMPROMISED_CUSTOMERS_PER_DAY, n_customers), replace=False)
        starts = np.searchsorted(key, chosen * n_days + day)
        stops = np.searchsorted(key, chosen * n_days + min(day + CUSTOMER_COMPROMISE_DAYS, n_days))
        pool = np.concatenate([np.arange(start, stop) for start, stop in zip(starts, stops)])
        frauds = rng.choice(pool, size=len(pool) // CUSTOMER_FRAUD_ONE_IN, replace=False)
        tx.amount[frauds] = np.round(tx.amount[frauds] * CUSTOMER_FRAUD_AMOUNT_FACTOR, 2)
        picked[frauds] = True
    return picked


def _fraud_scenarios(
    rng: np.random.Generator, tx: _Transactions, n_customers: int, n_terminals: int, n_days: int
) -> np.ndarray:
    """The scenario of each transaction (0 = genuine), later scenarios overwriting earlier ones."""
    scenario = np.where(tx.amount > FRAUD_AMOUNT_THRESHOLD, 1, 0).astype(np.int64)
    scenario[_compromised_terminals(rng, tx, n_terminals, n_days)] = 2
    scenario[_compromised_customers(rng, tx, n_customers, n_days)] = 3
    return scenario


def simulate(
    n_customers: int = 5000,
    n_terminals: int = 10000,
    n_days: int = 183,
    start_date: str = "2018-04-01",
    radius: float = 5.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Simulate ``n_days`` of card transactions with frauds, in the handbook's raw layout.

    The same arguments give the same frame. Columns are :data:`COLUMNS`, all int64 except TX_DATETIME
    (datetime64[ns]: ``start_date`` plus TX_TIME_SECONDS) and TX_AMOUNT (float64); rows are in time order
    and TRANSACTION_ID numbers them from 0. TX_FRAUD_SCENARIO is ground truth for analysis, never a model input.

    >>> frame = simulate(n_customers=50, n_terminals=100, n_days=5, seed=1)
    >>> list(frame.columns[:4])
    ['TRANSACTION_ID', 'TX_DATETIME', 'CUSTOMER_ID', 'TERMINAL_ID']
    >>> bool(frame["TX_TIME_SECONDS"].is_monotonic_increasing), str(frame["TX_DATETIME"].min().date())
    (True, '2018-04-01')
    """
    _check(n_customers, n_terminals, radius, n_days)
    start = pd.Timestamp(start_date).as_unit("ns").to_datetime64()
    profile_rng, transaction_rng, fraud_rng = _generators(seed)
    draws = _draw_profiles(profile_rng, n_customers, n_terminals, radius)
    tx = _draw_transactions(transaction_rng, draws, n_days)
    scenario = _fraud_scenarios(fraud_rng, tx, n_customers, n_terminals, n_days)
    order = np.argsort(tx.seconds, kind="stable")
    seconds = tx.seconds[order]
    frame = pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(len(order), dtype=np.int64),
            "TX_DATETIME": start + seconds.astype("timedelta64[s]"),
            "CUSTOMER_ID": tx.customer[order],
            "TERMINAL_ID": tx.terminal[order],
            "TX_AMOUNT": tx.amount[order],
            "TX_TIME_SECONDS": seconds,
            "TX_TIME_DAYS": tx.day[order],
            "TX_FRAUD": (scenario[order] > 0).astype(np.int64),
            "TX_FRAUD_SCENARIO": scenario[order],
        }
    )
    logger.info("simulated %d transactions, %d frauds, seed %d", len(frame), int(frame["TX_FRAUD"].sum()), seed)
    return frame


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as zstd-compressed Parquet without the index, creating parent folders.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     frame = simulate(n_customers=5, n_terminals=20, n_days=2)
    ...     written = write_parquet(frame, Path(folder) / "a" / "tx.parquet")
    ...     pd.read_parquet(written).columns.tolist() == list(COLUMNS)
    True
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(target, compression="zstd", index=False)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot write transactions to {target}: {error}") from error
    return target
