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

    outputs: torch.Tensor  # f(z) of the background rows, (B, H)
    inputs: torch.Tensor  # z of the background rows, (B, H)
    slopes: torch.Tensor  # f'(z) of the background rows, (B, H)


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
        self.n_inputs = self._steps[0].in_features
        if background.rows.shape[1] != self.n_inputs:
            raise ExplainError(f"background has {background.rows.shape[1]} columns, the network takes {self.n_inputs}")
        if self._steps[-1].out_features != 1:
            raise ExplainError(f"network must map (N, D) rows to (N, 1) logits, got {self._steps[-1].out_features} outputs")
        self._rows = torch.tensor(background.rows)
        self._weights = torch.tensor(background.weights)
        self._activations: list[_Activation] = []
        h = self._rows
        for step in self._steps:
            if isinstance(step, nn.Linear):
                h = torch.addmm(step.bias, h, step.weight.T)
                continue
            z = h.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                out = step(z)
                (slopes,) = torch.autograd.grad(out.sum(), z)
            h = out.detach()
            self._activations.append(_Activation(h, z.detach(), slopes))
        self.base_value = float(self._weights @ h.reshape(-1))

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """The network's output ``(N,)`` for rows ``(N, D)``, in float64."""
        with torch.no_grad():
            h = torch.from_numpy(_float64_rows(x, self.n_inputs))
            for step in self._steps:
                h = torch.addmm(step.bias, h, step.weight.T) if isinstance(step, nn.Linear) else step(h)
        return h.reshape(-1).numpy()

    def values(self, x: np.ndarray) -> np.ndarray:
        """SHAP values ``(N, D)``: ``values.sum(1) + base_value`` equals :meth:`outputs` up to rounding."""
        with torch.no_grad():
            inputs = torch.from_numpy(_float64_rows(x, self.n_inputs))
            multipliers = []
            h = inputs
            activations = iter(self._activations)
            for step in self._steps:
                if isinstance(step, nn.Linear):
                    h = torch.addmm(step.bias, h, step.weight.T)
                    continue
                reference = next(activations)
                out = step(h)
                delta_in = h[:, None, :] - reference.inputs[None]
                delta_out = out[:, None, :] - reference.outputs[None]
                rescale = torch.where(delta_in.abs() < SLOPE_EPSILON, reference.slopes[None], delta_out / delta_in)
                multipliers.append(rescale)
                h = out
            gradient = self._steps[-1].weight.reshape(1, 1, -1)
            for step in reversed(self._steps[:-1]):
                gradient = gradient @ step.weight if isinstance(step, nn.Linear) else gradient * multipliers.pop()
            delta = inputs[:, None, :] - self._rows[None]
            return torch.einsum("nbd,nbd,b->nd", gradient, delta, self._weights).numpy()


def _steps(network: nn.Module) -> list[nn.Module]:
    """Float64 CPU copies of the network's Linear layers and its activations, identities dropped."""
    if not isinstance(network, nn.Sequential):
        raise ExplainError(f"network must be an nn.Sequential of Linear layers and activations, got {type(network).__name__}")
    steps: list[nn.Module] = []
    for index, module in enumerate(network):
        if isinstance(module, nn.Linear):
            linear = nn.Linear(module.in_features, module.out_features, bias=True, dtype=torch.float64)
            with torch.no_grad():
                linear.weight.copy_(module.weight.detach())
                linear.bias.copy_(module.bias.detach() if module.bias is not None else torch.zeros(module.out_features))
            linear.requires_grad_(False)
            steps.append(linear)
        elif isinstance(module, ELEMENTWISE):
            activation = copy.deepcopy(module)
            if getattr(activation, "inplace", False):
                activation.inplace = False
            steps.append(activation)
        elif not isinstance(module, PASSTHROUGH):
            raise ExplainError(f"layer {index} ({type(module).__name__}) is not a Linear layer or a supported activation")
    if not steps or not isinstance(steps[0], nn.Linear) or not isinstance(steps[-1], nn.Linear):
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
