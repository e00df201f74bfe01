"""Session fixtures: a real Kafka-protocol broker (embedded Tansu) and small simulated data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from models.dataset import normalize
from models.simulate import simulate
from stream.embedded import EmbeddedBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One embedded broker for the whole session; tests use their own topic names or app ids."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture(scope="session")
def small_raw() -> pd.DataFrame:
    """Three weeks of simulated transactions in the handbook's raw layout (a few thousand rows)."""
    return simulate(n_customers=250, n_terminals=500, n_days=21, seed=3)


@pytest.fixture(scope="session")
def small_frame(small_raw: pd.DataFrame) -> pd.DataFrame:
    return normalize(small_raw)


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.items():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


@pytest.fixture(scope="session")
def stored_strings() -> Callable[[Path], dict[str, set[str]]]:
    """Every string held anywhere in an audit store, by ``view.column``, nested values (maps, lists) too."""
    from audit import connect

    def collect(root: Path) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        with connect(root) as con:
            views = [name for (name,) in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
            for view in views:
                result = con.sql(f"SELECT * FROM {view}")
                for column, values in zip(result.columns, zip(*result.fetchall())):
                    found.setdefault(f"{view}.{column}", set()).update(_strings(values))
        return found

    return collect
