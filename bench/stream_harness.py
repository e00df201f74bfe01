"""What the worker benchmarks share: transactions, a trained model, the worker's settings, reading topics back.

The worker runs as operators run it (``faust -A stream.app worker`` beside the audit writer, started by
:class:`stream.local.LocalServices`) against an embedded broker; the benchmark only produces and reads topics.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from models.dataset import normalize
from models.network import ModelArtifact
from models.registry import save_artifact
from models.replay import replay_features
from models.simulate import simulate
from models.train import TrainConfig, train_from_frame
from stream.drill import local_overrides
from stream.embedded import EmbeddedBroker
from stream.metrics import sample_total, scrape
from stream.settings import Settings

HANDBOOK = Path("../shared/data/handbook_raw.parquet")
PARTITIONS = 8


def load_transactions(data: Path, limit: int) -> tuple[pd.DataFrame, str]:
    """The first ``limit`` transactions of the handbook's file when it is there, else simulated ones; and
    which it was."""
    if data.exists():
        return normalize(pd.read_parquet(data)).head(limit).reset_index(drop=True), f"handbook ({data.name})"
    customers = 2000  # the simulator makes about 1.9 transactions per customer a day, as the handbook does
    raw = simulate(n_customers=customers, n_terminals=2 * customers, n_days=math.ceil(limit / (1.8 * customers)) + 1, seed=11)
    return normalize(raw).head(limit).reset_index(drop=True), "simulated (models/simulate.py)"


def train_model(registry: Path) -> ModelArtifact:
    """A behaviour model trained on four simulated weeks (seconds of work), saved as the champion."""
    frame = normalize(simulate(n_customers=500, n_terminals=1000, n_days=28, seed=5))
    artifact = train_from_frame(frame, replay_features(frame), valid_days=7, config=TrainConfig(epochs=5))
    save_artifact(artifact, registry)
    return artifact


def alert_threshold(artifact: ModelArtifact, frame: pd.DataFrame, rate: float = 0.01, sample: int = 20_000) -> float:
    """The logit above which ``rate`` of the frame's first ``sample`` transactions alert, so that the
    benchmark explains about as many alerts as a service would (the model was trained on other data)."""
    head = frame.head(sample).reset_index(drop=True)
    return float(np.quantile(artifact.predict_logit(replay_features(head)), 1.0 - rate))


def worker_overrides(broker: EmbeddedBroker, workdir: Path, app_id: str, **extra: Any) -> dict[str, Any]:
    """RISKSTREAM_* settings of a worker and audit writer on ``broker``, their files under ``workdir/app_id``,
    the model registry shared under ``workdir``.

    The audit writer flushes and exports at its default intervals, not at the tests' shorter ones, which cost it
    CPU (a Parquet export every second) that a deployment does not spend.
    """
    writer_defaults = {name: Settings.model_fields[name].default for name in ("audit_flush_interval_s", "audit_export_interval_s")}
    return local_overrides(broker.url, workdir / app_id, app_id, PARTITIONS) | writer_defaults | {"model_registry": workdir / "models"} | extra


def wait_for_metric(port: int, name: str, expected: float, timeout_s: float, alive: Callable[[], None]) -> float:
    """Poll a worker's ``/metrics`` until the counter ``name`` reaches ``expected``; returns the last value seen."""
    deadline = time.monotonic() + timeout_s
    value = 0.0
    while time.monotonic() < deadline:
        alive()
        try:
            value = sample_total(scrape(port, timeout_s=5.0), name)
        except OSError:  # the web server is not up yet, or too busy to answer in time
            pass
        if value >= expected:
            break
        time.sleep(0.5)
    return value


class CpuClock:
    """CPU seconds a process has used (all its threads), sampled against wall-clock time.

    Work per CPU second stays steady on a machine that other jobs share, where wall-clock rates do not.
    Reads ``/proc`` (Linux).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []

    def sample(self) -> None:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        self.samples.append((time.time(), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")))

    def between(self, start: float, end: float) -> float:
        """CPU seconds used between two wall-clock times (epoch seconds), interpolated between samples."""
        times, cpu = zip(*self.samples)
        return float(np.interp(end, times, cpu) - np.interp(start, times, cpu))


__all__ = ["HANDBOOK", "PARTITIONS", "CpuClock", "alert_threshold", "load_transactions", "train_model", "wait_for_metric", "worker_overrides"]
