"""The behaviour model: a plain MLP over the named features, and the artifact that carries it.

The network is a stack of ``nn.Linear`` and ``nn.ReLU`` modules and nothing else (no in-place ops, no
normalisation layers, no dropout), because that is the architecture ``shap.DeepExplainer`` explains with exact
additivity. Everything else a score needs (the fixed log transform, the standardisation, the alert threshold,
the SHAP background) travels with it in a :class:`ModelArtifact`, so the stream, the explainer and the
registry all read one object.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch
from torch import nn

from models.exceptions import ModelError

__all__ = ["ModelArtifact", "build_network", "default_log_features", "new_version", "version_matches", "weights_digest"]


def build_network(n_features: int, hidden: Sequence[int]) -> nn.Sequential:
    """An MLP ``Linear → ReLU → … → Linear(…, 1)`` returning one logit per row.

    >>> build_network(15, (8,))
    Sequential(
      (0): Linear(in_features=15, out_features=8, bias=True)
      (1): ReLU()
      (2): Linear(in_features=8, out_features=1, bias=True)
    )
    """
    layers: list[nn.Module] = []
    width = n_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def default_log_features(feature_names: Sequence[str]) -> tuple[str, ...]:
    """Names of the features that are log1p-transformed before scaling: counts and average amounts.

    Counts and a card's average spend span orders of magnitude; on a log scale a standardised input is well
    spread instead of a few outliers and a spike. The transaction's own amount stays linear: on the handbook's
    validation folds a log there compressed the large amounts where the riskiest decisions lie (AP 0.689
    against 0.703 without it). Flags and fraud shares stay as they are.

    >>> default_log_features(["amount", "is_night", "card_tx_count_1d", "card_avg_amount_7d", "terminal_fraud_rate_7d"])
    ('card_tx_count_1d', 'card_avg_amount_7d')
    """
    return tuple(name for name in feature_names if "count" in name or "avg_amount" in name)


def weights_digest(network: nn.Module) -> str:
    """SHA-256 of the network's parameters (names, shapes and float32 bytes), independent of file format.

    >>> a, b = build_network(3, (2,)), build_network(3, (2,))
    >>> _ = b.load_state_dict(a.state_dict())
    >>> weights_digest(a) == weights_digest(b)
    True
    """
    digest = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def new_version(network: nn.Module, created: datetime) -> str:
    """A version name: the UTC creation time, then the first 8 hex digits of :func:`weights_digest`.

    The registry checks the suffix against the weights it loads, so a name always means one set of weights.

    >>> new_version(build_network(2, (2,)), datetime(2026, 11, 22, 5, 15, tzinfo=timezone.utc))[:16]
    '20261122T051500-'
    """
    return f"{created.astimezone(timezone.utc):%Y%m%dT%H%M%S}-{weights_digest(network)[:8]}"


def version_matches(version: str, network: nn.Module) -> bool:
    """Whether ``version`` ends with the hash of ``network``'s weights (see :func:`new_version`)."""
    return version.rpartition("-")[2] == weights_digest(network)[:8]


@dataclass
class ModelArtifact:
    """A trained behaviour model with everything needed to score and explain raw feature rows.

    ``network`` maps *scaled* rows to logits; :meth:`scale` is the one place raw rows become scaled ones, so
    explain/ can work in scaled space and still name the raw features.

    >>> names = ("card_avg_amount_1d", "is_night")
    >>> artifact = ModelArtifact("v0", names, build_network(2, (4,)), np.zeros(2), np.ones(2),
    ...                          np.zeros((1, 2)), 0.5, 7.0, log_features=("card_avg_amount_1d",))
    >>> artifact.scale(np.array([[np.e - 1.0, 1.0]])).round(3).tolist()
    [[1.0, 1.0]]
    >>> artifact.predict_proba(np.zeros((3, 2))).shape
    (3,)
    """

    version: str
    feature_names: tuple[str, ...]
    network: nn.Module
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    background: np.ndarray
    threshold: float
    label_delay_days: float
    metrics: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    data_range: dict = field(default_factory=dict)
    trained_on: str = "cpu"
    created_at: str = ""
    log_features: tuple[str, ...] = ()
    """Features passed through ``log1p`` (negative values clipped to 0) before standardisation."""
    reference: dict = field(default_factory=dict)
    """The training rows' :func:`models.reference.reference_profile`, for drift monitoring (empty if unknown)."""

    def __post_init__(self) -> None:
        self._log_columns = np.array([self.feature_names.index(name) for name in self.log_features], dtype=np.int64)

    def transform(self, x_raw: np.ndarray) -> np.ndarray:
        """The fixed, unscaled transform: ``log1p`` of the :attr:`log_features` columns, as float64."""
        x = np.array(x_raw, dtype=np.float64, ndmin=2)
        if x.shape[1] != len(self.feature_names):
            raise ModelError(f"model {self.version} expects {len(self.feature_names)} features, got {x.shape[1]}")
        x[:, self._log_columns] = np.log1p(np.maximum(x[:, self._log_columns], 0.0))
        return x

    def scale(self, x_raw: np.ndarray) -> np.ndarray:
        """Raw rows ``(N, F)`` to the network's float32 input: transform, then standardise."""
        return ((self.transform(x_raw) - self.scaler_mean) / self.scaler_scale).astype(np.float32)

    def predict_logit(self, x_raw: np.ndarray) -> np.ndarray:
        """Logits ``(N,)`` of raw rows, in one forward pass without gradients."""
        with torch.no_grad():
            return self.network(torch.from_numpy(self.scale(x_raw))).reshape(-1).numpy()

    def predict_proba(self, x_raw: np.ndarray) -> np.ndarray:
        """Fraud probabilities ``(N,)`` of raw rows, the scores compared with :attr:`threshold`."""
        return torch.sigmoid(torch.from_numpy(self.predict_logit(x_raw).astype(np.float64))).numpy()
