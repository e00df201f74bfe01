"""Fixtures for the fault tests: one trained model for every test that runs a worker, and their settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from models.registry import save_artifact
from models.replay import replay_features
from models.train import TrainConfig, train_from_frame
from stream.embedded import EmbeddedBroker
from stream.local import isolated_overrides

DAY = 86_400


@pytest.fixture(scope="session")
def fault_registry(small_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry whose champion was trained on the first ten days of ``small_frame`` (workers only read it)."""
    history = small_frame[small_frame["time"] < small_frame["time"].min() + 10 * DAY].reset_index(drop=True)
    artifact = train_from_frame(history, replay_features(history), valid_days=3, config=TrainConfig(epochs=4))
    registry = tmp_path_factory.mktemp("fault-models")
    save_artifact(artifact, registry)
    return registry


@pytest.fixture
def service_overrides(broker: EmbeddedBroker, fault_registry: Path, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Settings for LocalServices under ``name`` (on the session broker unless told), serving the shared model."""

    def overrides(name: str, broker_url: str | None = None, **changes: Any) -> dict[str, Any]:
        return isolated_overrides(name, broker_url or broker.url, tmp_path, model_registry=fault_registry, **changes)

    return overrides
