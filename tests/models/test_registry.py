"""The model registry: round trips, the champion pointer, and refusing tampered or missing models."""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import torch
from scipy.special import expit, logit

from models.exceptions import ModelError, ModelIntegrityError, ModelNotFoundError
from models.network import BehaviourModel, ModelArtifact, ModelInputs, new_version
from models.registry import (
    CHAMPION,
    POINTERS_LOCK,
    champion_history,
    champion_version,
    list_versions,
    load_artifact,
    manifest_of,
    rollback,
    save_artifact,
    set_champion,
    set_shadow,
    shadow_version,
)

NAMES = ("amount", "card_tx_count_1d", "terminal_fraud_rate_7d")


def _artifact(seed: int, minutes: int = 0) -> ModelArtifact:
    torch.manual_seed(seed)
    network = BehaviourModel(len(NAMES), (8, 4), sequence_dim=4, summary_size=3).eval()
    created = datetime(2026, 11, 22, tzinfo=timezone.utc) + timedelta(minutes=minutes)
    rng = np.random.default_rng(seed)
    return ModelArtifact(
        version=new_version(network, created),
        feature_names=NAMES,
        network=network,
        scaler_mean=rng.normal(size=3),
        scaler_scale=rng.uniform(0.5, 2.0, size=3),
        background=_inputs(rng, 20),
        threshold_logit=38.5,  # among the logits whose probability rounds to 1
        label_delay_days=7.0,
        metrics={"auc": 0.9, "ap": 0.7, "cp_at_100": 0.3},
        params={"hidden": [8, 4], "seed": seed},
        data_range={"start": "2018-07-01T00:00:00+00:00", "end": "2018-07-31T23:59:59+00:00"},
        trained_on="cpu",
        created_at=created.isoformat(),
        log_features=("amount", "card_tx_count_1d"),
        reference={"score": {"edges": [0.1, 0.5], "shares": [0.5, 0.3, 0.2]}},
        explanation_background=(rng.normal(size=(4, len(NAMES) + 3)), rng.uniform(1.0, 5.0, size=4)),
    )


def _inputs(rng: np.random.Generator, n: int) -> ModelInputs:
    return ModelInputs(rng.uniform(0, 100, size=(n, len(NAMES))), rng.normal(size=(n, 8, 4)).astype(np.float32))


def test_save_then_load_gives_the_same_model(tmp_path):
    artifact = _artifact(0)
    folder = save_artifact(artifact, tmp_path)
    assert sorted(path.name for path in folder.iterdir()) == [
        "background.npy", "background_sequences.npy", "explanation_background.npy", "explanation_weights.npy",
        "manifest.json", "manifest.sha256", "weights.pt",
    ]
    loaded = load_artifact(tmp_path)
    x = _inputs(np.random.default_rng(1), 64)
    assert np.array_equal(loaded.predict_logit(x), artifact.predict_logit(x))
    assert np.array_equal(loaded.background.features, artifact.background.features)
    assert np.array_equal(loaded.background.sequences, artifact.background.sequences)
    assert np.array_equal(loaded.scaler_mean, artifact.scaler_mean)
    for saved, given in zip(loaded.explanation_background, artifact.explanation_background):
        assert np.array_equal(saved, given)
    for field in ("version", "feature_names", "threshold_logit", "threshold", "label_delay_days", "metrics", "params", "data_range",
                  "trained_on", "created_at", "log_features", "reference", "input_names"):
        assert getattr(loaded, field) == getattr(artifact, field), field
    assert not loaded.network.training


def test_the_manifest_keeps_the_threshold_as_a_logit_and_a_probability(tmp_path):
    folder = save_artifact(_artifact(0), tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["threshold_logit"] == 38.5 and manifest["threshold"] == 1.0  # 38.5 is beyond float64's last score below 1


@pytest.mark.parametrize("probability", [0.42, 1.0])
def test_a_model_saved_with_a_probability_threshold_alerts_on_the_same_scores(tmp_path, probability):
    """A manifest written before thresholds were logits has only the probability; 1 meant every score that rounds to 1."""
    folder = save_artifact(_artifact(0), tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["threshold_logit"]
    (folder / "manifest.json").write_text(json.dumps(manifest | {"threshold": probability}))
    (folder / "manifest.sha256").unlink()  # nor had it a digest then
    loaded = load_artifact(tmp_path)
    logits = np.array([-2.0, logit(0.42), 0.0, 36.0, 36.8, 40.0, 400.0])
    assert loaded.alerts(logits).tolist() == (expit(logits) >= probability).tolist()
    assert loaded.threshold == pytest.approx(probability, abs=1e-15)


def test_a_model_saved_without_an_explanation_background_loads_without_one(tmp_path):
    artifact = replace(_artifact(0), explanation_background=None)
    folder = save_artifact(artifact, tmp_path)
    assert not (folder / "explanation_background.npy").exists()
    assert load_artifact(tmp_path).explanation_background is None


def test_the_champion_moves_only_when_promoted(tmp_path):
    first, second, third = _artifact(0, 0), _artifact(1, 1), _artifact(2, 2)
    save_artifact(first, tmp_path)
    save_artifact(second, tmp_path, promote=False)
    assert champion_version(tmp_path) == first.version
    assert load_artifact(tmp_path).version == first.version
    save_artifact(third, tmp_path)
    assert (tmp_path / CHAMPION).read_text().strip() == third.version
    set_champion(tmp_path, second.version)
    assert load_artifact(tmp_path).version == second.version
    listing = list_versions(tmp_path)
    assert [entry["version"] for entry in listing] == [first.version, second.version, third.version]
    assert [entry["champion"] for entry in listing] == [False, True, False]
    assert listing[0]["metrics"] == first.metrics
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".") and path.name != POINTERS_LOCK]  # no staging left behind


def test_rollback_returns_to_each_previous_champion_in_turn(tmp_path):
    first, second, third = _artifact(0, 0), _artifact(1, 1), _artifact(2, 2)
    for artifact in (first, second, third):
        save_artifact(artifact, tmp_path)
    assert champion_history(tmp_path) == [first.version, second.version, third.version]
    assert rollback(tmp_path) == second.version
    assert load_artifact(tmp_path).version == second.version
    assert rollback(tmp_path) == first.version
    with pytest.raises(ModelNotFoundError, match="no previous champion"):
        rollback(tmp_path)
    assert champion_version(tmp_path) == first.version
    set_champion(tmp_path, third.version)  # a promotion after a rollback is rolled back to where it came from
    assert rollback(tmp_path) == first.version


def test_a_registry_without_history_keeps_its_champion_for_rollback(tmp_path):
    first, second = _artifact(0, 0), _artifact(1, 1)
    save_artifact(first, tmp_path)
    (tmp_path / "CHAMPION_HISTORY").unlink()
    save_artifact(second, tmp_path)
    assert rollback(tmp_path) == first.version


def test_shadow_pointer_and_notes_show_in_the_listing(tmp_path):
    champion, challenger = _artifact(0, 0), _artifact(1, 1)
    save_artifact(champion, tmp_path)
    challenge = {"as_of": "2018-08-01T00:00:00+00:00", "champion": champion.version, "champion_metrics": {"ap": 0.5},
                 "challenger_metrics": {"ap": 0.6}}
    save_artifact(challenger, tmp_path, promote=False, notes={"challenge": challenge})
    assert shadow_version(tmp_path) is None
    set_shadow(tmp_path, challenger.version)
    assert shadow_version(tmp_path) == challenger.version
    listing = {entry["version"]: entry for entry in list_versions(tmp_path)}
    assert listing[challenger.version]["shadow"] and not listing[challenger.version]["champion"]
    assert listing[challenger.version]["challenge"] == challenge == manifest_of(tmp_path, challenger.version)["challenge"]
    assert load_artifact(tmp_path, challenger.version).version == challenger.version  # notes leave the checksums valid
    set_shadow(tmp_path, None)
    assert shadow_version(tmp_path) is None
    with pytest.raises(ModelNotFoundError):
        set_shadow(tmp_path, "20200101T000000-deadbeef")
    with pytest.raises(ModelError, match="notes"):
        save_artifact(_artifact(2, 2), tmp_path, notes={"threshold": 0.0})


@pytest.mark.parametrize(
    "name", ["weights.pt", "background.npy", "background_sequences.npy", "explanation_background.npy", "explanation_weights.npy"]
)
def test_a_tampered_file_is_refused(tmp_path, name):
    artifact = _artifact(0)
    folder = save_artifact(artifact, tmp_path)
    data = bytearray((folder / name).read_bytes())
    data[-1] ^= 0x01
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="checksum"):
        load_artifact(tmp_path, artifact.version)


def test_weights_swapped_with_a_matching_checksum_are_refused(tmp_path):
    good, other = _artifact(0, 0), _artifact(1, 1)
    good_folder, other_folder = save_artifact(good, tmp_path), save_artifact(other, tmp_path)
    shutil.copy(other_folder / "weights.pt", good_folder / "weights.pt")
    manifest = json.loads((good_folder / "manifest.json").read_text())
    manifest["sha256"]["weights.pt"] = json.loads((other_folder / "manifest.json").read_text())["sha256"]["weights.pt"]
    (good_folder / "manifest.json").write_text(json.dumps(manifest))
    (good_folder / "manifest.sha256").write_text(hashlib.sha256((good_folder / "manifest.json").read_bytes()).hexdigest())
    with pytest.raises(ModelIntegrityError, match="another version"):
        load_artifact(tmp_path, good.version)


def test_a_broken_manifest_is_refused(tmp_path):
    artifact = _artifact(0)
    folder = save_artifact(artifact, tmp_path)
    (folder / "manifest.sha256").unlink()  # what is in a manifest is checked, digest or not
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ModelIntegrityError):
        load_artifact(tmp_path)
    (folder / "manifest.json").write_text(json.dumps({"version": artifact.version}))
    with pytest.raises(ModelIntegrityError, match="format None"):
        load_artifact(tmp_path)
    (folder / "manifest.json").write_text(json.dumps({"version": artifact.version, "format": 2}))
    with pytest.raises(ModelIntegrityError, match="incomplete"):
        load_artifact(tmp_path)
    assert list_versions(tmp_path)[0]["metrics"] == {}


def test_an_edited_manifest_is_refused_and_one_saved_without_a_digest_loads_with_a_warning(tmp_path, caplog):
    artifact = _artifact(0)
    folder = save_artifact(artifact, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps(manifest | {"threshold_logit": -5.0}, indent=2, sort_keys=True))
    with pytest.raises(ModelIntegrityError, match="manifest"):
        load_artifact(tmp_path)
    with pytest.raises(ModelIntegrityError, match="manifest"):  # what the audit writer reads of a model is checked too
        manifest_of(tmp_path, artifact.version)
    (folder / "manifest.sha256").unlink()  # as saved before manifests had a digest
    with caplog.at_level("WARNING", logger="models.registry"):
        assert load_artifact(tmp_path).threshold_logit == -5.0
    assert "not verified" in caplog.text


def test_concurrent_promotions_each_stay_in_the_history(tmp_path):
    artifacts = [_artifact(seed, seed) for seed in range(6)]
    for artifact in artifacts:
        save_artifact(artifact, tmp_path, promote=False)
    set_champion(tmp_path, artifacts[0].version)
    with ThreadPoolExecutor(len(artifacts) - 1) as pool:
        list(pool.map(lambda artifact: set_champion(tmp_path, artifact.version), artifacts[1:] * 20))
    history = champion_history(tmp_path)
    assert len(history) == 1 + 20 * (len(artifacts) - 1)
    assert history[-1] == champion_version(tmp_path)


def test_rollback_refuses_when_the_champion_is_not_the_last_promotion(tmp_path):
    first, second = _artifact(0, 0), _artifact(1, 1)
    save_artifact(first, tmp_path)
    save_artifact(second, tmp_path)
    (tmp_path / CHAMPION).write_text(first.version + "\n")  # changed by hand, not through set_champion
    with pytest.raises(ModelError, match="not the last"):
        rollback(tmp_path)
    assert champion_version(tmp_path) == first.version and champion_history(tmp_path) == [first.version, second.version]


def test_missing_models_are_reported_as_not_found(tmp_path):
    assert list_versions(tmp_path / "nowhere") == []
    with pytest.raises(ModelNotFoundError):
        load_artifact(tmp_path)
    save_artifact(_artifact(0), tmp_path)
    with pytest.raises(ModelNotFoundError):
        load_artifact(tmp_path, "20200101T000000-deadbeef")
    with pytest.raises(ModelNotFoundError):
        load_artifact(tmp_path, "../outside")
    with pytest.raises(ModelNotFoundError):
        set_champion(tmp_path, "20200101T000000-deadbeef")


def test_a_version_is_written_once_and_must_name_its_weights(tmp_path):
    artifact = _artifact(0)
    save_artifact(artifact, tmp_path)
    with pytest.raises(ModelError, match="already"):
        save_artifact(artifact, tmp_path)
    artifact.version = "20261122T000000-00000000"
    with pytest.raises(ModelError, match="hash"):
        save_artifact(artifact, tmp_path)


def test_a_version_linked_from_outside_the_registry_is_refused(tmp_path):
    elsewhere, registry = tmp_path / "elsewhere", tmp_path / "registry"
    artifact = _artifact(0)
    save_artifact(artifact, elsewhere)
    registry.mkdir()
    (registry / artifact.version).symlink_to(elsewhere / artifact.version)
    (registry / "CHAMPION").write_text(artifact.version + "\n")
    with pytest.raises(ModelNotFoundError, match="outside the registry"):
        load_artifact(registry)
    with pytest.raises(ModelNotFoundError, match="outside the registry"):
        load_artifact(registry, artifact.version)
    assert load_artifact(elsewhere).version == artifact.version  # the same files, from their own registry


def test_a_refused_or_failed_save_leaves_nothing_in_the_registry(tmp_path, monkeypatch):
    artifact = _artifact(0)
    with pytest.raises(ModelError, match="may not replace manifest keys"):
        save_artifact(artifact, tmp_path, notes={"version": "mine"})

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_artifact(artifact, tmp_path)
    assert list(tmp_path.iterdir()) == []  # no staging folder, no version
