"""Session fixtures: a real Kafka-protocol broker (embedded Tansu) and small simulated data."""

from __future__ import annotations

from collections.abc import Iterator

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
