"""Exact SHAP values of an MLP head in closed form: DeepLIFT's rescale rule, batched over rows and background.

For a stack of ``nn.Linear`` layers and elementwise activations, ``shap.DeepExplainer`` computes, for each
explained row ``x`` and background row ``r``, the chain of multipliers ``W_L · M_{L-1} · W_{L-1} ⋯ M_1 · W_1``,
where ``M_k`` is the diagonal of ``(f(z_k(x)) - f(z_k(r))) / (z_k(x) - z_k(r))`` (the activation's slope
``f'(z_k(r))`` where the two inputs are closer than ``1e-6``), and averages ``(x - r) * multipliers`` over the
background. The rescale rule makes every layer pass on exactly its change in output, so the values add up to
``f(x) - mean f(r)`` up to rounding. This module computes the same numbers with a few batched float64 matrix
products instead of one hooked autograd pass per row: the same values (tests compare with shap to 1e-10),
in a fraction of the time, and without touching the caller's network.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from explain.exceptions import ExplainError

ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Softplus)
"""Activations the rescale rule treats as shap's DeepExplainer does (its ``nonlinear_1d`` handler)."""
PASSTHROUGH = (nn.Identity, nn.Dropout)
"""Modules that are the identity in eval mode."""
SLOPE_EPSILON = 1e-6
"""Below this change in an activation's input, shap uses the activation's slope at the background row."""


@dataclass(frozen=True)
class Background:
    """Reference rows in the explained network's input space, each with a weight (e.g. its cluster's size).

    >>> Background(np.zeros((2, 3)), np.array([3.0, 1.0])).weights.tolist()
    [0.75, 0.25]
    """

    rows: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        rows = np.array(self.rows, dtype=np.float64, ndmin=2)
        weights = np.array(self.weights, dtype=np.float64).reshape(-1)
        if rows.ndim != 2 or not len(rows):
            raise ExplainError(f"background rows must be a non-empty (B, D) array, got shape {rows.shape}")
        if weights.shape != (len(rows),) or not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
            raise ExplainError(f"background weights must be {len(rows)} non-negative numbers with a positive sum")
        if not np.all(np.isfinite(rows)):
            raise ExplainError("background rows must be finite")
        for name, array in (("rows", rows), ("weights", weights / weights.sum())):
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @classmethod
    def uniform(cls, rows: np.ndarray) -> Background:
        """Rows of equal weight, as ``shap.DeepExplainer`` uses a background tensor."""
        return cls(rows, np.ones(len(np.atleast_2d(rows))))


@dataclass(frozen=True)
class _Activation:
    """What the rescale rule needs of one activation layer's background rows."""

    outputs: np.ndarray  # f(z) of the background rows, (B, H)
    inputs: np.ndarray  # z of the background rows, (B, H)
    slopes: np.ndarray  # f'(z) of the background rows, (B, H)


class DeepLift:
    """DeepLIFT (rescale) attributions of a Linear/activation ``nn.Sequential`` with one output, in float64.

    Parameters
    ----------
    network
        ``nn.Sequential`` of ``nn.Linear``, elementwise activations (:data:`ELEMENTWISE`) and identities,
        ending in a ``Linear(…, 1)``: the model's logit. Its weights are copied; the module is not kept.
    background
        Reference rows and their weights; the base value is the weighted mean output over them.

    >>> network = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> deeplift = DeepLift(network, Background.uniform(np.array([[0.0, 0.0], [1.0, -1.0]])))
    >>> x = np.array([[2.0, 1.0]])
    >>> bool(abs(deeplift.values(x).sum() + deeplift.base_value - deeplift.outputs(x)[0]) < 1e-12)
    True
    """

    def __init__(self, network: nn.Module, background: Background) -> None:
        self._steps = _steps(network)
        first, last = self._steps[0], self._steps[-1]
        assert isinstance(first, _Linear) and isinstance(last, _Linear)
        self.n_inputs = first.weight.shape[1]
        if background.rows.shape[1] != self.n_inputs:
            raise ExplainError(f"background has {background.rows.shape[1]} columns, the network takes {self.n_inputs}")
        if last.weight.shape[0] != 1:
            raise ExplainError(f"network must map (N, D) rows to (N, 1) logits, got {last.weight.shape[0]} outputs")
        self._rows = background.rows
        self._weights = background.weights
        self._references: list[_Activation] = []
        h = self._rows
        for step in self._steps:
            if isinstance(step, _Linear):
                h = step(h)
                continue
            z = torch.tensor(h, requires_grad=True)
            with torch.enable_grad():
                out = step.module(z)
                (slopes,) = torch.autograd.grad(out.sum(), z)
            self._references.append(_Activation(out.detach().numpy(), h, slopes.numpy()))
            h = out.detach().numpy()
        self.base_value = float(self._weights @ h.reshape(-1))

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """The network's output ``(N,)`` for rows ``(N, D)``, in float64."""
        h = _float64_rows(x, self.n_inputs)
        for step in self._steps:
            h = step(h)
        return h.reshape(-1)

    def values(self, x: np.ndarray) -> np.ndarray:
        """SHAP values ``(N, D)``: ``values.sum(1) + base_value`` equals :meth:`outputs` up to rounding.

        NumPy rather than torch for the products: an alert batch is a few rows, where torch's per-call
        overhead costs more than the arithmetic. The caller bounds BLAS threads (the worker uses one).
        """
        inputs = _float64_rows(x, self.n_inputs)
        if not len(inputs):
            return np.zeros((0, self.n_inputs))
        multipliers = []
        h = inputs
        references = iter(self._references)
        for step in self._steps:
            if isinstance(step, _Linear):
                h = step(h)
                continue
            reference = next(references)
            out = step(h)
            delta_in = h[:, None, :] - reference.inputs
            multiplier = out[:, None, :] - reference.outputs
            with np.errstate(divide="ignore", invalid="ignore"):
                np.divide(multiplier, delta_in, out=multiplier)  # in place: fewer (N, B, H) arrays to allocate
            np.copyto(multiplier, reference.slopes, where=np.abs(delta_in, out=delta_in) < SLOPE_EPSILON)
            multipliers.append(multiplier)
            h = out
        pairs = len(inputs) * len(self._rows)
        gradient = self._steps[-1].weight  # (1, H), then (pairs, H) from the first activation on
        for step in reversed(self._steps[:-1]):
            if isinstance(step, _Linear):
                gradient = gradient @ step.weight  # one 2-D product over all (row, background row) pairs
            else:
                gradient = gradient * multipliers.pop().reshape(pairs, -1)
        gradient = np.broadcast_to(gradient, (pairs, gradient.shape[-1])).reshape(len(inputs), len(self._rows), -1)
        return self._weights @ (gradient * (inputs[:, None, :] - self._rows))  # (B,) @ (N, B, D)


@dataclass(frozen=True)
class _Linear:
    """A float64 copy of an ``nn.Linear``'s parameters."""

    weight: np.ndarray  # (out, in)
    bias: np.ndarray  # (out,)

    def __call__(self, h: np.ndarray) -> np.ndarray:
        return h @ self.weight.T + self.bias


@dataclass(frozen=True)
class _Elementwise:
    """A copy of a parameter-free activation module, applied to float64 rows that it shares with torch.

    Nothing here requires a gradient, so torch records no graph without a ``no_grad`` block. ReLU, the
    usual head activation, is NumPy's ``maximum``: the same numbers without a torch call per layer.
    """

    module: nn.Module

    def __call__(self, h: np.ndarray) -> np.ndarray:
        if type(self.module) is nn.ReLU:
            return np.maximum(h, 0.0)
        return self.module(torch.from_numpy(h)).numpy()


def _steps(network: nn.Module) -> list[_Linear | _Elementwise]:
    """Float64 copies of the network's Linear layers and its activations, identities dropped."""
    if not isinstance(network, nn.Sequential):
        raise ExplainError(f"network must be an nn.Sequential of Linear layers and activations, got {type(network).__name__}")
    steps: list[_Linear | _Elementwise] = []
    for index, module in enumerate(network):
        if isinstance(module, nn.Linear):
            weight = module.weight.detach().to("cpu", torch.float64).numpy().copy()
            bias = np.zeros(len(weight)) if module.bias is None else module.bias.detach().to("cpu", torch.float64).numpy().copy()
            if steps and isinstance(steps[-1], _Linear):  # two Linear layers in a row are one: W2 (W1 x + b1) + b2
                previous = steps.pop()
                weight, bias = weight @ previous.weight, weight @ previous.bias + bias
            steps.append(_Linear(weight, bias))
        elif isinstance(module, ELEMENTWISE):
            activation = copy.deepcopy(module).to("cpu")
            if getattr(activation, "inplace", False):
                activation.inplace = False
            steps.append(_Elementwise(activation))
        elif not isinstance(module, PASSTHROUGH):
            raise ExplainError(f"layer {index} ({type(module).__name__}) is not a Linear layer or a supported activation")
    if not steps or not isinstance(steps[0], _Linear) or not isinstance(steps[-1], _Linear):
        raise ExplainError("network must start and end with a Linear layer")
    return steps


def _float64_rows(x: np.ndarray, columns: int) -> np.ndarray:
    try:
        rows = np.ascontiguousarray(x, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ExplainError("rows are not numeric") from error
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    if rows.ndim != 2 or rows.shape[1] != columns:
        raise ExplainError(f"rows have shape {np.shape(x)}, expected (N, {columns})")
    return rows


__all__ = ["ELEMENTWISE", "PASSTHROUGH", "SLOPE_EPSILON", "Background", "DeepLift"]
