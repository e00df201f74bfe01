"""Partitions moving between workers lose and double nothing: two workers sharing the topic, a worker added and
one removed during a replay, and a worker killed with SIGKILL mid-replay and restarted.

Each run is checked against the offline replay (which one uninterrupted worker matches, see
test_end_to_end.py): one decision per transaction with the same score, every stored alert on the alerts topic,
every card's changelogged state as an uninterrupted run leaves it. bench/scale_out.py and bench/faults.py run
the same drills at full size.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pandas as pd
import pytest

from models.network import ModelArtifact
from models.registry import save_artifact
from stream.drill import Reference, RunCheck, Step, check_run, local_overrides, replay, simulated
from stream.embedded import EmbeddedBroker
from stream.local import LocalServices
from stream.metrics import sample_total, scrape

pytestmark = pytest.mark.e2e


#: Seconds the two-week replay is spread over: partitions then stay hours apart in event time, not the label
#: delay (7 days) that would change terminal windows (see stream.drill.replay).
REPLAY_S = 40.0


@pytest.fixture(scope="module")
def drill_data() -> tuple[pd.DataFrame, ModelArtifact]:
    """Two weeks of 150 cards (about 3,500 transactions and their labels), a model trained on the first ten days."""
    return simulated(customers=150, days=14, seed=11, train_days=10)


@pytest.fixture(scope="module")
def frame(drill_data: tuple[pd.DataFrame, ModelArtifact]) -> pd.DataFrame:
    return drill_data[0]


@pytest.fixture(scope="module")
def artifact(drill_data: tuple[pd.DataFrame, ModelArtifact]) -> ModelArtifact:
    return drill_data[1]


@pytest.fixture(scope="module")
def uninterrupted(frame: pd.DataFrame, artifact: ModelArtifact) -> Reference:
    return Reference.of(frame, artifact)


def run(broker: EmbeddedBroker, root: Path, name: str, frame: pd.DataFrame, artifact: ModelArtifact,
        uninterrupted: Reference, steps: list[Step], store_url: str = "memory://") -> RunCheck:
    """Two workers with their tables in ``store_url``, the replay paced over REPLAY_S, ``steps`` on the way; the
    check of what it left."""
    overrides = local_overrides(broker.url, root, name) | {"store_url": store_url}
    save_artifact(artifact, overrides["model_registry"])
    events = len(frame) + int(frame["label"].sum())
    with LocalServices(overrides, root / "logs", workers=2) as services:
        replay(services, frame, steps, rate=events / REPLAY_S, timeout_s=240)
        return check_run(services.settings, uninterrupted)


def assert_exact(check: RunCheck) -> None:
    """One decision per transaction, alerts neither lost nor invented, card state and card features equal to the
    uninterrupted run's, and its score wherever the features are equal (float32 inference: BLAS order varies with
    the batch size, hence 1e-6).

    Terminal features may differ: they read only transactions older than the label delay (7 days), which is 20 s
    of this paced replay, and a worker that lags behind on busy cores lets card partitions drift further apart.
    """
    assert check.decisions == check.transactions and not check.missing and not check.doubled, check
    assert check.alerts > 0 and not check.alerts_missing and not check.alerts_unknown, check
    assert check.cards > 0 and not check.cards_differing and not check.card_features_differing, check
    assert not check.scores_unexplained, check


def test_workers_share_partitions_and_rebalance_under_load_exactly(broker, tmp_path, frame, artifact, uninterrupted) -> None:
    """Two workers split the partitions; a third joins at 30 % and the first leaves at 60 %."""
    shares: list[float] = []

    def record_shares(services: LocalServices) -> None:
        shares.extend(sample_total(scrape(services.worker_port(index)), "riskstream_decisions_total") for index in (0, 1))

    def add(services: LocalServices) -> None:
        services.start_worker()

    def remove(services: LocalServices) -> None:
        services.kill_worker(0, signal.SIGTERM)

    check = run(broker, tmp_path, "rebalance", frame, artifact, uninterrupted,
                steps=[(0.25, record_shares), (0.3, add), (0.6, remove)])
    assert all(share > 0 for share in shares), shares  # both workers scored before the rebalances
    assert_exact(check)


@pytest.mark.parametrize("store_url", ["memory://", "rocksdb://"])
def test_worker_killed_mid_replay_and_restarted(broker, tmp_path, frame, artifact, uninterrupted, store_url) -> None:
    """SIGKILL (no flush, no leave) at 30 %, the survivor takes over, the worker restarts at 45 %: with tables in
    memory, rebuilt from their changelogs; and in RocksDB, whose files the restarted worker finds again."""

    def crash(services: LocalServices) -> None:
        services.kill_worker(1, signal.SIGKILL)

    def restart(services: LocalServices) -> None:
        services.start_worker(1)

    check = run(broker, tmp_path, f"crash-{store_url.split(':')[0]}", frame, artifact, uninterrupted,
                steps=[(0.3, crash), (0.45, restart)], store_url=store_url)
    assert_exact(check)
    assert check.decision_messages >= check.transactions
    # The killed worker's partitions stalled for tens of seconds, days of the paced replay's event time: a terminal
    # may then see an old transaction after a newer one, which changes its windows (never the card's features).
