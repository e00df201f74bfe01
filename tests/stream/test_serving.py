"""The worker's model switching, on a real registry folder: promotion, shadow, rollback and a refused model."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import torch

from models.features import FEATURE_NAMES, SEQUENCE_LENGTH, SEQUENCE_STEP
from models.network import BehaviourModel, ModelArtifact, ModelInputs, new_version
from models.registry import rollback, save_artifact, set_champion, set_shadow
from stream import metrics
from stream.privacy import DEMO_KEY, Tokenizer
from stream.settings import Settings


def model(seed: int) -> ModelArtifact:
    torch.manual_seed(seed)
    network = BehaviourModel(len(FEATURE_NAMES), (8,), len(SEQUENCE_STEP), 4).eval()
    rng = np.random.default_rng(seed)
    background = ModelInputs(rng.uniform(0, 5, (20, len(FEATURE_NAMES))), np.zeros((20, SEQUENCE_LENGTH, len(SEQUENCE_STEP)), np.float32))
    version = new_version(network, datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=seed))
    return ModelArtifact(version, FEATURE_NAMES, network, np.zeros(len(FEATURE_NAMES)), np.ones(len(FEATURE_NAMES)), background, 0.5, 7.0)


def batch(n: int = 4) -> tuple[list[dict], ModelInputs]:
    transactions = [{"tx_id": f"t{i}", "event_time": 0, "card_id": "c", "terminal_id": "m", "amount": 1.0} for i in range(n)]
    rng = np.random.default_rng(0)
    return transactions, ModelInputs(rng.uniform(0, 5, (n, len(FEATURE_NAMES))), np.zeros((n, SEQUENCE_LENGTH, len(SEQUENCE_STEP)), np.float32))


def switches(role: str, outcome: str) -> float:
    samples = [sample for family in metrics.MODEL_SWITCHES.collect() for sample in family.samples]
    return sum(s.value for s in samples if s.name.endswith("_total") and s.labels == {"role": role, "outcome": outcome})


def test_workers_switch_between_batches_keep_serving_through_a_refused_model_and_score_in_shadow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISKSTREAM_DEMO_MODE", "true")  # stream.app builds the worker's app when imported
    from stream.app import Serving

    registry = tmp_path / "models"
    first, second, third = model(0), model(1), model(2)
    for artifact in (first, second, third):
        save_artifact(artifact, registry, promote=artifact is first)
    serving = Serving(Settings(model_registry=registry, demo_mode=True), Tokenizer(DEMO_KEY))
    transactions, inputs = batch()

    async def scenario() -> list[tuple[set[str], set[str | None]]]:
        seen = []

        async def score() -> None:
            decisions = (await serving.score(transactions, inputs)).decisions
            seen.append(({d["model_version"] for d in decisions}, {d.get("shadow_model_version") for d in decisions}))

        await serving.start()
        await score()
        set_shadow(registry, second.version)
        await serving.refresh()
        await score()  # the swap happens here, before the batch
        set_champion(registry, third.version)
        (registry / third.version / "weights.pt").write_bytes(b"tampered")
        await serving.refresh()
        await serving.refresh()  # the same refused pointers: not loaded nor counted again
        await score()
        rollback(registry)  # back to the first model, shadow unchanged: nothing to load
        await serving.refresh()
        set_champion(registry, second.version)
        set_shadow(registry, None)
        await serving.refresh()
        await score()
        return seen

    refused_before, switched_before = switches("champion", "refused"), switches("champion", "switched")
    seen = asyncio.run(scenario())

    assert seen == [
        ({first.version}, {None}),
        ({first.version}, {second.version}),
        ({first.version}, {second.version}),  # the tampered champion is refused; the old one keeps serving
        ({second.version}, {None}),
    ]
    assert switches("champion", "refused") - refused_before == 1
    assert switches("champion", "switched") - switched_before == 1
