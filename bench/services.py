"""What the fault scripts share: simulated data, a trained model, and the worker's memory and lag."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from models.dataset import normalize
from models.registry import save_artifact
from models.replay import replay_features
from models.simulate import simulate
from models.train import TrainConfig, train_from_frame
from stream.metrics import sample_total, scrape

DAY = 86_400


def simulated(customers: int, days: int, seed: int = 5) -> pd.DataFrame:
    """Simulated transactions, normalized, in time order."""
    return normalize(simulate(n_customers=customers, n_terminals=2 * customers, n_days=days, seed=seed))


def trained_registry(frame: pd.DataFrame, registry: Path, days: int = 10) -> Path:
    """A registry whose champion was trained on the first ``days`` days of ``frame`` (a few epochs: a load test)."""
    history = frame[frame["time"] < frame["time"].min() + days * DAY].reset_index(drop=True)
    save_artifact(train_from_frame(history, replay_features(history), valid_days=3, config=TrainConfig(epochs=3)), registry)
    return registry


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_lag(port: int) -> float:
    """The worker's consumer lag over all its partitions, from its /metrics page (NaN when it does not answer)."""
    try:
        return sample_total(scrape(port, timeout_s=5.0), "riskstream_consumer_lag")
    except OSError:
        return float("nan")
