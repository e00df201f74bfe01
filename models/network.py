"""The behaviour model: a GRU that summarises the card's recent sequence, and an MLP head over the named
features plus that summary; and the artifact that carries it.

The head is a stack of ``nn.Linear`` and ``nn.ReLU`` modules and nothing else (no in-place ops, no
normalisation layers, no dropout), because that is the architecture ``shap.DeepExplainer`` explains with exact
additivity; its first layers may be a fixed encoding of thresholds found in the training data
(:func:`knot_encoding`), built from the same two modules. The recurrent encoder stays outside the explained function: its summary enters the head as a few
extra inputs that explain/ reports as one reason ("recent spending pattern"). Everything else a score needs
(the fixed log transform, the standardisation, the alert threshold, the SHAP background) travels with it in a
:class:`ModelArtifact`, so the stream, the explainer and the registry all read one object.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch
from scipy.special import expit
from torch import nn

from models.exceptions import ModelError

__all__ = [
    "SUMMARY_GROUP",
    "BehaviourModel",
    "FrozenLinear",
    "ModelArtifact",
    "ModelInputs",
    "build_network",
    "default_log_features",
    "knot_encoding",
    "log1p_columns",
    "logit_threshold",
    "new_version",
    "sequence_inputs",
    "version_matches",
    "weights_digest",
]

SUMMARY_GROUP = "recent_spending_pattern"
"""The reason name under which the learned sequence summary's columns are explained together."""


STEP_WIDTH = 0.01
"""Width, in standard deviations of its feature, of the ramp that stands for a step at a knot."""


class FrozenLinear(nn.Linear):
    """A fixed ``nn.Linear`` (no gradient) that computes in its own precision even under mixed precision.

    The knot encoding multiplies inputs by ``1 / STEP_WIDTH`` and subtracts nearly equal numbers; in half
    precision that would blur its steps, so it keeps full precision while the trained layers use autocast.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.weight.copy_(weight)
            self.bias.copy_(bias)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.to(self.weight.dtype))


def knot_encoding(n_inputs: int, knots: Sequence[Sequence[float]]) -> list[nn.Module]:
    """Fixed layers ``FrozenLinear → ReLU → FrozenLinear`` that pass the ``n_inputs`` columns through and add,
    for each knot ``t`` of column ``i`` (``knots[i]``), a hinge ``max(x_i - t, 0)`` and a step from 0 to 1 at
    ``t`` (a ramp ``STEP_WIDTH`` wide).

    An MLP started at random bends smoothly where the bulk of its data lies; a training week holds too few
    transactions past a sharp threshold (an amount above which every transaction is fraud, the day a
    compromise ends) to learn the edge. Given the edges as inputs, the head learns how much each one
    matters. Built from ``Linear`` and ``ReLU`` only, the head stays explainable with exact additivity.

    >>> layers = knot_encoding(2, [(0.5,), ()])
    >>> nn.Sequential(*layers)(torch.tensor([[1.0, -3.0], [0.0, 2.0]])).tolist()
    [[1.0, -3.0, 0.5, 1.0], [0.0, 2.0, 0.0, 0.0]]
    """
    pairs = [(column, knot) for column, column_knots in enumerate(knots) for knot in column_knots]
    width = 2 * n_inputs + 3 * len(pairs)
    expand, expand_bias = torch.zeros(width, n_inputs), torch.zeros(width)
    combine = torch.zeros(n_inputs + 2 * len(pairs), width)
    for column in range(n_inputs):  # x = max(x, 0) - max(-x, 0)
        expand[column, column], expand[n_inputs + column, column] = 1.0, -1.0
        combine[column, column], combine[column, n_inputs + column] = 1.0, -1.0
    for index, (column, knot) in enumerate(pairs):
        row, out = 2 * n_inputs + 3 * index, n_inputs + 2 * index
        expand[row, column], expand_bias[row] = 1.0, -knot  # the hinge
        expand[row + 1 : row + 3, column] = 1.0 / STEP_WIDTH  # the step: max(u, 0) - max(u - 1, 0)
        expand_bias[row + 1], expand_bias[row + 2] = -knot / STEP_WIDTH, -knot / STEP_WIDTH - 1.0
        combine[out, row] = 1.0
        combine[out + 1, row + 1], combine[out + 1, row + 2] = 1.0, -1.0
    return [FrozenLinear(expand, expand_bias), nn.ReLU(), FrozenLinear(combine, torch.zeros(len(combine)))]


def build_network(n_inputs: int, hidden: Sequence[int], knots: Sequence[Sequence[float]] = ()) -> nn.Sequential:
    """An MLP ``Linear → ReLU → … → Linear(…, 1)`` returning one logit per row, after the
    :func:`knot_encoding` of ``knots`` when any column has one.

    >>> build_network(15, (8,))
    Sequential(
      (0): Linear(in_features=15, out_features=8, bias=True)
      (1): ReLU()
      (2): Linear(in_features=8, out_features=1, bias=True)
    )
    """
    layers: list[nn.Module] = knot_encoding(n_inputs, knots) if any(knots) else []
    width = n_inputs + 2 * sum(len(column_knots) for column_knots in knots)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def sequence_inputs(sequences: np.ndarray) -> np.ndarray:
    """The encoder's float32 input ``(N, L, D)``: the z-score channel through ``asinh``, the rest as they are.

    Z-scores run from -5 to 50; ``asinh`` keeps their sign and order while bringing them to the scale of the
    other channels (flags and ``log1p`` hours).
    """
    x = np.array(sequences, dtype=np.float32, ndmin=3)
    x[:, :, 1] = np.arcsinh(x[:, :, 1])
    return x


class BehaviourModel(nn.Module):
    """``head([scaled features, GRU summary of the sequence])``: one logit per transaction.

    >>> model = BehaviourModel(3, (4,), sequence_dim=2, summary_size=2)
    >>> model(torch.zeros(5, 3), torch.zeros(5, 8, 2)).shape
    torch.Size([5, 1])
    """

    def __init__(
        self, n_features: int, hidden: Sequence[int], sequence_dim: int, summary_size: int, knots: Sequence[Sequence[float]] = ()
    ) -> None:
        super().__init__()
        self.knots: tuple[tuple[float, ...], ...] = tuple(tuple(float(knot) for knot in column) for column in knots)
        """Knots of the scaled feature columns (see :func:`knot_encoding`); the summary's columns have none."""
        self.encoder = nn.GRU(sequence_dim, summary_size, batch_first=True)
        self.head = build_network(n_features + summary_size, hidden, self.knots)

    def summary(self, sequences: torch.Tensor) -> torch.Tensor:
        """The GRU's last hidden state ``(N, summary_size)``: what the card's recent sequence looks like."""
        return self.encoder(sequences)[1][-1]

    def forward(self, features: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([features, self.summary(sequences)], dim=1))


def default_log_features(feature_names: Sequence[str]) -> tuple[str, ...]:
    """Names of the features that are log1p-transformed before scaling: counts, average amounts, ratios, gaps.

    Counts, a card's average spend, amount ratios and the hours between transactions span orders of
    magnitude; on a log scale a standardised input is well spread instead of a few outliers and a spike. The
    transaction's own amount stays linear: on the handbook's validation folds a log there compressed the large
    amounts where the riskiest decisions lie (AP 0.689 against 0.703 without it). Flags and fraud shares stay
    as they are.

    >>> default_log_features(["amount", "is_night", "card_tx_count_1d", "card_avg_amount_7d", "card_amount_vs_mean"])
    ('card_tx_count_1d', 'card_avg_amount_7d', 'card_amount_vs_mean')
    """
    markers = ("count", "avg_amount", "_vs_", "hours_since")
    return tuple(name for name in feature_names if any(marker in name for marker in markers))


def log1p_columns(x_raw: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """A float64 copy of the rows with ``log1p`` of the given columns (negative values clipped to 0).

    >>> log1p_columns(np.array([[np.e - 1.0, -2.0]]), [0, 1]).tolist()
    [[1.0, 0.0]]
    """
    x = np.array(x_raw, dtype=np.float64, ndmin=2)
    x[:, columns] = np.log1p(np.maximum(x[:, columns], 0.0))
    return x


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


@dataclass(frozen=True)
class ModelInputs:
    """What the model reads for N transactions: raw named features ``(N, F)`` and card sequences ``(N, L, D)``.

    Indexing with rows (a slice, a mask, positions) gives the inputs of those transactions.

    >>> inputs = ModelInputs(np.zeros((3, 2)), np.zeros((3, 8, 4)))
    >>> len(inputs[[0, 2]]), inputs[1:].sequences.shape
    (2, (2, 8, 4))
    """

    features: np.ndarray
    sequences: np.ndarray

    def __post_init__(self) -> None:
        if len(self.features) != len(self.sequences):
            raise ModelError(f"{len(self.features)} feature rows but {len(self.sequences)} sequences")

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, rows) -> ModelInputs:
        return ModelInputs(self.features[rows], self.sequences[rows])

    @classmethod
    def concat(cls, parts: Sequence[ModelInputs]) -> ModelInputs:
        return cls(np.concatenate([part.features for part in parts]), np.concatenate([part.sequences for part in parts]))


def logit_threshold(probability: float) -> float:
    """The least logit whose score (float64 ``expit``) reaches ``probability``: a logit at or above it scores at or
    above the probability, one below it under.

    Alerts compare logits, because a score saturates: every logit above about 36.7 scores exactly 1 in float64,
    and the knot steps give more than 1 % of transactions such logits. A threshold given as a probability
    (an operator's ``RISKSTREAM_THRESHOLD``, a model saved before thresholds were logits) alerts on exactly the
    scores it did, 1 included.

    >>> limit = logit_threshold(1.0)
    >>> round(limit, 2), float(expit(limit)), float(expit(np.nextafter(limit, -np.inf))) < 1.0
    (36.74, 1.0, True)
    >>> float(expit(logit_threshold(0.5))), logit_threshold(0.0)
    (0.5, -inf)
    """
    if probability <= 0.0:
        return -np.inf
    if probability > 1.0:
        return np.inf
    below, above = -800.0, 800.0  # expit(-800) is 0, expit(800) is 1: the answer lies between
    while True:  # bisection over the floats between the two, down to adjacent ones
        middle = (below + above) / 2.0
        if middle in (below, above):
            return above
        if expit(middle) >= probability:
            above = middle
        else:
            below = middle


@dataclass
class ModelArtifact:
    """A trained behaviour model with everything needed to score and explain raw model inputs.

    ``network`` maps *scaled* feature rows and sequences to logits; :meth:`scale` is the one place raw rows
    become scaled ones. :meth:`head_inputs` gives the explained head's input (scaled features, then the
    sequence summary), whose columns :attr:`input_names` names, so explain/ can work in that space and still
    name the raw features.

    >>> names = ("card_avg_amount_1d", "is_night")
    >>> network = BehaviourModel(2, (4,), sequence_dim=4, summary_size=2)
    >>> artifact = ModelArtifact("v0", names, network, np.zeros(2), np.ones(2),
    ...                          ModelInputs(np.zeros((1, 2)), np.zeros((1, 8, 4))), 0.5, 7.0,
    ...                          log_features=("card_avg_amount_1d",))
    >>> artifact.scale(np.array([[np.e - 1.0, 1.0]])).round(3).tolist()
    [[1.0, 1.0]]
    >>> artifact.input_names
    ('card_avg_amount_1d', 'is_night', 'recent_spending_pattern_0', 'recent_spending_pattern_1')
    >>> artifact.predict_proba(ModelInputs(np.zeros((3, 2)), np.zeros((3, 8, 4)))).shape
    (3,)
    """

    version: str
    feature_names: tuple[str, ...]
    network: BehaviourModel
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    background: ModelInputs
    threshold_logit: float
    """The alert threshold, in log-odds: a transaction alerts when its logit is at or above it."""
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
    explanation_background: tuple[np.ndarray, np.ndarray] | None = None
    """The explainer's background, summarised from :attr:`background` once at training (``explain.summarise``):
    weighted rows ``(B, F + S)`` in head-input space and their ``(B,)`` weights. Summarising needs shap, whose
    import took 3 s of every worker's start; None (older models) summarises when the explainer is built."""

    def __post_init__(self) -> None:
        self._log_columns = np.array([self.feature_names.index(name) for name in self.log_features], dtype=np.int64)

    @property
    def threshold(self) -> float:
        """The alert threshold as a probability (1 when it lies among the logits that score exactly 1)."""
        return float(expit(self.threshold_logit))

    def alerts(self, logits: np.ndarray) -> np.ndarray:
        """Which of ``logits`` alert."""
        return logits >= self.threshold_logit

    @property
    def head(self) -> nn.Sequential:
        """The explained part of the network: an MLP over :meth:`head_inputs`."""
        return self.network.head

    @property
    def input_names(self) -> tuple[str, ...]:
        """Names of the head's input columns: the features, then ``recent_spending_pattern_<i>``."""
        size = self.network.encoder.hidden_size
        return self.feature_names + tuple(f"{SUMMARY_GROUP}_{index}" for index in range(size))

    @property
    def input_groups(self) -> dict[str, list[int]]:
        """Head input columns explained together: the sequence summary, as one reason."""
        first = len(self.feature_names)
        return {SUMMARY_GROUP: list(range(first, first + self.network.encoder.hidden_size))}

    def transform(self, x_raw: np.ndarray) -> np.ndarray:
        """The fixed, unscaled transform: ``log1p`` of the :attr:`log_features` columns, as float64."""
        x = np.array(x_raw, dtype=np.float64, ndmin=2)
        if x.shape[1] != len(self.feature_names):
            raise ModelError(f"model {self.version} expects {len(self.feature_names)} features, got {x.shape[1]}")
        return log1p_columns(x, self._log_columns)

    def scale(self, x_raw: np.ndarray) -> np.ndarray:
        """Raw rows ``(N, F)`` to the network's float32 input: transform, then standardise."""
        return ((self.transform(x_raw) - self.scaler_mean) / self.scaler_scale).astype(np.float32)

    def head_inputs(self, inputs: ModelInputs) -> np.ndarray:
        """The explained head's float32 input ``(N, F + S)``: scaled features, then the sequence summary."""
        with torch.no_grad():
            summary = self.network.summary(torch.from_numpy(sequence_inputs(inputs.sequences))).numpy()
        return np.concatenate([self.scale(inputs.features), summary], axis=1)

    def score_head(self, head_inputs: np.ndarray) -> np.ndarray:
        """Logits ``(N,)`` of head inputs (see :meth:`head_inputs`), in one forward pass without gradients.

        The network computes in float32; the logits are returned as float64 so that they, every score derived
        from them and their comparison with the float64 threshold are in one precision (NumPy compares a float32
        array with a Python float in float32, which could alert on a logit just below the threshold).
        """
        with torch.no_grad():
            return self.head(torch.from_numpy(head_inputs)).reshape(-1).numpy().astype(np.float64)

    def predict_logit(self, inputs: ModelInputs) -> np.ndarray:
        """Logits ``(N,)`` of raw inputs."""
        return self.score_head(self.head_inputs(inputs))

    def predict_proba(self, inputs: ModelInputs) -> np.ndarray:
        """Fraud probabilities ``(N,)`` of raw inputs."""
        return torch.sigmoid(torch.from_numpy(self.predict_logit(inputs))).numpy()
