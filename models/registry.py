"""A file-system model registry: one folder per version, checksummed, and CHAMPION and SHADOW pointers.

Layout: ``REGISTRY/<version>/{manifest.json, manifest.sha256, weights.pt, background.npy,
background_sequences.npy}`` (and, for models trained since it was added, the explainer's summarised background:
``explanation_background.npy``, ``explanation_weights.npy``),
``REGISTRY/CHAMPION`` (the version the workers score and alert with), ``REGISTRY/CHAMPION_HISTORY`` (every
promotion, oldest first, so a rollback knows the previous champion) and ``REGISTRY/SHADOW`` (a challenger the
workers also score every event with, without alerting; absent when none). A version folder appears in one
rename, and each pointer is replaced atomically, so a worker reloading at any moment sees either the old model
or the new one, never half of one; promotions and rollbacks hold ``REGISTRY/.pointers.lock`` while they read
and rewrite the pointers, so concurrent ones each keep their place in the history. Loading checks the manifest
against ``manifest.sha256``, the SHA-256 of each other file against the manifest, and the weights against the
hash in the version name, and refuses a model that fails (:class:`ModelIntegrityError`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.exceptions import ModelError, ModelIntegrityError, ModelNotFoundError
from models.network import BehaviourModel, FrozenLinear, ModelArtifact, ModelInputs, logit_threshold, version_matches

__all__ = [
    "CHAMPION",
    "SHADOW",
    "ModelArtifact",
    "champion_history",
    "champion_version",
    "list_versions",
    "load_artifact",
    "manifest_of",
    "reference_of",
    "rollback",
    "save_artifact",
    "set_champion",
    "set_shadow",
    "shadow_version",
]

logger = logging.getLogger(__name__)

CHAMPION, HISTORY, SHADOW = "CHAMPION", "CHAMPION_HISTORY", "SHADOW"
MANIFEST, WEIGHTS, BACKGROUND, SEQUENCES = "manifest.json", "weights.pt", "background.npy", "background_sequences.npy"
MANIFEST_DIGEST = "manifest.sha256"
"""The manifest's SHA-256: absent from models saved before it, which load unverified, with a warning."""
POINTERS_LOCK = ".pointers.lock"
"""Held while a promotion or rollback reads and rewrites CHAMPION and CHAMPION_HISTORY."""
EXPLANATION_ROWS, EXPLANATION_WEIGHTS = "explanation_background.npy", "explanation_weights.npy"
"""Optional (models saved before them have neither): the explainer's summarised background."""
FORMAT = 2


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hidden(network: BehaviourModel) -> list[int]:
    trained = [layer for layer in network.head if isinstance(layer, nn.Linear) and not isinstance(layer, FrozenLinear)]
    return [layer.out_features for layer in trained][:-1]


def _manifest(artifact: ModelArtifact) -> dict:
    return {
        "format": FORMAT,
        "version": artifact.version,
        "created_at": artifact.created_at,
        "feature_names": list(artifact.feature_names),
        "log_features": list(artifact.log_features),
        "hidden": _hidden(artifact.network),
        "sequence_dim": artifact.network.encoder.input_size,
        "summary_size": artifact.network.encoder.hidden_size,
        "knots": [list(column) for column in artifact.network.knots],
        "scaler_mean": [float(value) for value in artifact.scaler_mean],
        "scaler_scale": [float(value) for value in artifact.scaler_scale],
        "threshold": artifact.threshold,  # the probability, for readers of the manifest; alerts use the logit
        "threshold_logit": float(artifact.threshold_logit),
        "label_delay_days": float(artifact.label_delay_days),
        "metrics": artifact.metrics,
        "params": artifact.params,
        "data_range": artifact.data_range,
        "trained_on": artifact.trained_on,
        "reference": artifact.reference,
    }


def _folder(root: Path, version: str) -> Path:
    """The folder of ``version``, refusing names that would leave the registry."""
    if not version or version.startswith(".") or Path(version).name != version:
        raise ModelNotFoundError(f"{version!r} is not a model version name")
    folder = root / version
    if folder.resolve().parent != root.resolve():  # a link out of the registry: load nothing from elsewhere
        raise ModelNotFoundError(f"model {version!r} in {root} links outside the registry")
    return folder


def _write_pointer(root: Path, name: str, text: str) -> None:
    """Replace ``REGISTRY/<name>`` atomically: a reader sees the old content or the new, never half."""
    with tempfile.NamedTemporaryFile("w", dir=root, prefix=f".{name.lower()}-", delete=False) as file:
        file.write(text)
    os.replace(file.name, root / name)


@contextmanager
def _pointers_locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the registry's pointers, so a read-modify-write of the history loses no other."""
    if not root.is_dir():
        raise ModelNotFoundError(f"no model registry at {root}")
    with (root / POINTERS_LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _require(root: Path, version: str) -> None:
    if not (_folder(root, version) / MANIFEST).is_file():
        raise ModelNotFoundError(f"no model version {version!r} in {root}")


def set_champion(registry: str | Path, version: str) -> None:
    """Make ``version`` the champion by atomically replacing ``REGISTRY/CHAMPION``; the promotion is appended
    to ``CHAMPION_HISTORY`` (see :func:`rollback`)."""
    root = Path(registry)
    _require(root, version)
    with _pointers_locked(root):
        history = champion_history(root)
        if not history and (root / CHAMPION).is_file():  # a registry from before the history was kept
            history = [champion_version(root)]
        _write_pointer(root, HISTORY, "".join(f"{entry}\n" for entry in [*history, version]))
        _write_pointer(root, CHAMPION, version + "\n")
    logger.info("promoted %s to champion in %s", version, root)


def champion_history(registry: str | Path) -> list[str]:
    """The champions in the order they were promoted, the current one last (empty before the first)."""
    try:
        return (Path(registry) / HISTORY).read_text().split()
    except FileNotFoundError:
        return []


def rollback(registry: str | Path) -> str:
    """Make the previous champion the champion again and return it; the current one leaves the history.

    Refused when the champion is not the last promotion in the history (``CHAMPION`` changed by other means):
    the history then no longer says which champion came before it.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as root:
    ...     for version in ("a", "b"):
    ...         (Path(root) / version).mkdir()
    ...         _ = (Path(root) / version / MANIFEST).write_text("{}")
    ...         set_champion(root, version)
    ...     rollback(root), champion_version(root), champion_history(root)
    ('a', 'a', ['a'])
    """
    root = Path(registry)
    with _pointers_locked(root):
        history = champion_history(root)
        if len(history) < 2:
            raise ModelNotFoundError(f"no previous champion to roll back to in {root}")
        champion = champion_version(root)
        if history[-1] != champion:
            raise ModelError(f"champion {champion!r} is not the last promotion {history[-1]!r} in {root}: not rolling back")
        previous = history[-2]
        _require(root, previous)
        _write_pointer(root, HISTORY, "".join(f"{entry}\n" for entry in history[:-1]))
        _write_pointer(root, CHAMPION, previous + "\n")
    logger.info("rolled back from %s to %s in %s", history[-1], previous, root)
    return previous


def shadow_version(registry: str | Path) -> str | None:
    """The version named in ``REGISTRY/SHADOW``, or None when no challenger runs in shadow."""
    try:
        return (Path(registry) / SHADOW).read_text().strip() or None
    except FileNotFoundError:
        return None


def set_shadow(registry: str | Path, version: str | None) -> None:
    """Name ``version`` as the shadow challenger (None clears it)."""
    root = Path(registry)
    if version is None:
        (root / SHADOW).unlink(missing_ok=True)
        logger.info("cleared the shadow model in %s", root)
        return
    _require(root, version)
    _write_pointer(root, SHADOW, version + "\n")
    logger.info("shadowing %s in %s", version, root)


def save_artifact(artifact: ModelArtifact, registry: str | Path, promote: bool = True, notes: dict | None = None) -> Path:
    """Write ``artifact`` as ``REGISTRY/<version>/`` and, when ``promote``, make it the champion.

    ``notes`` are extra manifest entries (e.g. a retraining's ``challenge``: both models' evaluations); they may
    not replace the manifest's own keys.

    >>> import tempfile
    >>> from datetime import datetime, timezone
    >>> from models.network import new_version
    >>> network = BehaviourModel(1, (2,), sequence_dim=4, summary_size=2)
    >>> version = new_version(network, datetime(2026, 11, 22, tzinfo=timezone.utc))
    >>> background = ModelInputs(np.zeros((1, 1)), np.zeros((1, 8, 4)))
    >>> artifact = ModelArtifact(version, ("a",), network, np.zeros(1), np.ones(1), background, 0.5, 7.0)
    >>> with tempfile.TemporaryDirectory() as root:
    ...     _ = save_artifact(artifact, root)
    ...     load_artifact(root).version == version
    True
    """
    root = Path(registry)
    if not version_matches(artifact.version, artifact.network):
        raise ModelError(f"version {artifact.version!r} does not end with its weights' hash (see models.network.new_version)")
    target = _folder(root, artifact.version)
    if target.exists():
        raise ModelError(f"model version {artifact.version!r} is already in {root}")
    manifest = _manifest(artifact)
    clash = set(notes or {}) & (set(manifest) | {"sha256"})
    if clash:
        raise ModelError(f"notes may not replace manifest keys: {sorted(clash)}")
    manifest.update(notes or {})
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{artifact.version}-"))
    try:  # a failed save (a full disk) leaves no half-written folder behind
        _write_files(artifact, manifest, staging)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("saved model %s to %s", artifact.version, target)
    if promote:
        set_champion(root, artifact.version)
    return target


def _write_files(artifact: ModelArtifact, manifest: dict, folder: Path) -> None:
    """The artifact's files, then its manifest with their checksums, then the manifest's digest."""
    state = {name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in artifact.network.state_dict().items()}
    torch.save(state, folder / WEIGHTS)
    np.save(folder / BACKGROUND, np.asarray(artifact.background.features, dtype=np.float64))
    np.save(folder / SEQUENCES, np.asarray(artifact.background.sequences, dtype=np.float32))
    files = [WEIGHTS, BACKGROUND, SEQUENCES]
    if artifact.explanation_background is not None:
        rows, weights = artifact.explanation_background
        np.save(folder / EXPLANATION_ROWS, np.asarray(rows, dtype=np.float64))
        np.save(folder / EXPLANATION_WEIGHTS, np.asarray(weights, dtype=np.float64))
        files += [EXPLANATION_ROWS, EXPLANATION_WEIGHTS]
    manifest["sha256"] = {name: _sha256(folder / name) for name in files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    (folder / MANIFEST_DIGEST).write_text(_sha256(folder / MANIFEST) + "\n")


def champion_version(registry: str | Path) -> str:
    """The version named in ``REGISTRY/CHAMPION``."""
    try:
        return (Path(registry) / CHAMPION).read_text().strip()
    except FileNotFoundError as error:
        raise ModelNotFoundError(f"no champion model in {registry}") from error


def _read_manifest(folder: Path) -> dict:
    """The manifest, refused when edited since it was saved: its checksums cover every other file, and
    ``manifest.sha256`` covers it (the bytes parsed are the bytes hashed). A guard against corruption and
    mistaken edits, not against someone who may write the registry."""
    try:
        raw = (folder / MANIFEST).read_bytes()
    except FileNotFoundError as error:
        raise ModelNotFoundError(f"no model version {folder.name!r} in {folder.parent}") from error
    try:
        expected = (folder / MANIFEST_DIGEST).read_text().strip()
    except FileNotFoundError:
        logger.warning(
            "model %r has no %s (saved before manifests had one): its manifest is not verified", folder.name, MANIFEST_DIGEST
        )
    else:
        if hashlib.sha256(raw).hexdigest() != expected:
            raise ModelIntegrityError(f"{MANIFEST} of model {folder.name!r} does not match {MANIFEST_DIGEST}")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelIntegrityError(f"manifest of model {folder.name!r} is not valid JSON") from error


def _verified(folder: Path, manifest: dict) -> ModelArtifact:
    """Build the artifact of a manifest whose files have been checked against its checksums."""
    if manifest.get("format") != FORMAT:
        raise ModelIntegrityError(f"model {folder.name!r} has format {manifest.get('format')}; this code reads format {FORMAT}")
    explained = EXPLANATION_ROWS in manifest["sha256"]
    for name in (WEIGHTS, BACKGROUND, SEQUENCES) + ((EXPLANATION_ROWS, EXPLANATION_WEIGHTS) if explained else ()):
        if _sha256(folder / name) != manifest["sha256"].get(name):
            raise ModelIntegrityError(f"{name} of model {folder.name!r} does not match its manifest checksum")
    names = tuple(manifest["feature_names"])
    network = BehaviourModel(len(names), manifest["hidden"], manifest["sequence_dim"], manifest["summary_size"], manifest.get("knots", ()))
    network.load_state_dict(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
    if manifest["version"] != folder.name or not version_matches(folder.name, network):
        raise ModelIntegrityError(f"model {folder.name!r}: the weights or manifest belong to another version")
    return ModelArtifact(
        version=folder.name,
        feature_names=names,
        network=network.eval(),
        scaler_mean=np.asarray(manifest["scaler_mean"], dtype=np.float64),
        scaler_scale=np.asarray(manifest["scaler_scale"], dtype=np.float64),
        background=ModelInputs(np.load(folder / BACKGROUND, allow_pickle=False), np.load(folder / SEQUENCES, allow_pickle=False)),
        # A model saved before thresholds were logits alerts on the scores its probability threshold did.
        threshold_logit=float(manifest["threshold_logit"]) if "threshold_logit" in manifest else logit_threshold(manifest["threshold"]),
        label_delay_days=float(manifest["label_delay_days"]),
        metrics=manifest["metrics"],
        params=manifest["params"],
        data_range=manifest["data_range"],
        trained_on=manifest["trained_on"],
        created_at=manifest["created_at"],
        log_features=tuple(manifest["log_features"]),
        reference=manifest.get("reference") or {},
        explanation_background=(
            (np.load(folder / EXPLANATION_ROWS, allow_pickle=False), np.load(folder / EXPLANATION_WEIGHTS, allow_pickle=False))
            if explained else None
        ),
    )


def load_artifact(registry: str | Path, version: str | None = None) -> ModelArtifact:
    """Load a version (the champion when None), refusing one whose files fail their checksums."""
    root = Path(registry)
    folder = _folder(root, version or champion_version(root))
    manifest = _read_manifest(folder)
    try:
        return _verified(folder, manifest)
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, EOFError, pickle.UnpicklingError) as error:
        raise ModelIntegrityError(f"model {folder.name!r} in {root} is incomplete or corrupt: {error}") from error


def manifest_of(registry: str | Path, version: str) -> dict:
    """The manifest of ``version`` as saved (weights not loaded nor checked): names, threshold, reference..."""
    return _read_manifest(_folder(Path(registry), version))


def reference_of(registry: str | Path, version: str) -> dict:
    """The training data's reference profile of ``version`` (see :mod:`models.reference`); ``{}`` for a model
    saved without one.

    >>> import tempfile
    >>> from datetime import datetime, timezone
    >>> from models.network import BehaviourModel, new_version
    >>> network = BehaviourModel(1, (2,), sequence_dim=4, summary_size=2)
    >>> version = new_version(network, datetime(2026, 11, 22, tzinfo=timezone.utc))
    >>> background = ModelInputs(np.zeros((1, 1)), np.zeros((1, 8, 4)))
    >>> artifact = ModelArtifact(version, ("a",), network, np.zeros(1), np.ones(1), background, 0.5, 7.0,
    ...                          reference={"bins": 2, "feature_names": ["a"]})
    >>> with tempfile.TemporaryDirectory() as root:
    ...     _ = save_artifact(artifact, root)
    ...     reference_of(root, version)["feature_names"]
    ['a']
    """
    return manifest_of(registry, version).get("reference") or {}


def list_versions(registry: str | Path) -> list[dict]:
    """``{"version", "created_at", "metrics", "champion", "shadow", "challenge"}`` of each saved version, oldest
    first (``challenge``: a retrained challenger's evaluation against the champion, ``{}`` for others)."""
    root = Path(registry)
    if not root.is_dir():
        return []
    try:
        champion = champion_version(root)
    except ModelNotFoundError:
        champion = None
    shadow = shadow_version(root)
    versions = []
    for folder in sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith(".")):
        try:
            manifest = _read_manifest(folder)
        except ModelError as error:
            logger.warning("skipping %s: %s", folder, error)
            continue
        versions.append(
            {
                "version": folder.name,
                "created_at": manifest.get("created_at", ""),
                "metrics": manifest.get("metrics", {}),
                "champion": folder.name == champion,
                "shadow": folder.name == shadow,
                "challenge": manifest.get("challenge", {}),
            }
        )
    return sorted(versions, key=lambda entry: (entry["created_at"], entry["version"]))
