"""Exact SHAP values for a Linear/ReLU scoring network, in log-odds, with shap's DeepExplainer.

DeepLIFT's rescale rule is exact for such a network: a row's values add up to its logit minus the mean
logit over the background rows. The explainer hooks a private float64 copy of the network, so the gap
stays near 1e-14 (a float32 copy left gaps up to ~4e-5 on a confident model, too close to the 1e-4
tolerance), and the caller's network is never hooked, converted or switched to eval mode.

Values are computed on scaled inputs, as the network sees them; a fixed per-feature transform does not
change which feature gets which share, so each reason reports the feature's raw value.
"""

from __future__ import annotations

import copy
import logging
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from explain.exceptions import ExplainError
from explain.explanation import DEFAULT_TOLERANCE, Explanation, check_additivity, reason_label
from models.features import FEATURES

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATES: Mapping[str, str] = MappingProxyType({feature.name: feature.reason for feature in FEATURES})
"""Reason templates of the model's features, used when an explainer is given none."""

PROBE_ROWS = 8
"""Background rows explained when an explainer is built, to refuse a network that cannot add up."""


class ExplainableArtifact(Protocol):
    """What ``Explainer.for_artifact`` reads from a model artifact."""

    @property
    def head(self) -> nn.Module: ...

    @property
    def input_names(self) -> Sequence[str]: ...

    @property
    def background(self) -> Any: ...

    def head_inputs(self, inputs: Any) -> np.ndarray: ...


class Explainer:
    """Explains a batch of scored rows in one shap call; built once per model, reused for every alert.

    Parameters
    ----------
    network
        A module of Linear/ReLU layers mapping scaled rows (N, F) to logits (N, 1). In-place
        activations are switched off in the private copy; functional activations (``F.relu`` in
        ``forward``) or layers shap does not support make the build fail with ``ExplainError``.
    background_scaled
        Reference rows (scaled), typically up to 200; the base value is their mean logit.
    feature_names
        The F feature names, in model order.
    reason_templates
        A ``{value}`` template per feature name; features without one read ``"<name> = <value>"``.
        Defaults to the templates in ``models.features``.
    tolerance
        The additivity gap above which an explanation is logged as failing.

    Calls are serialised by a lock: shap keeps per-call state on the hooked copy.

    >>> network = nn.Sequential(nn.Linear(2, 1))
    >>> with torch.no_grad():
    ...     _ = network[0].weight.copy_(torch.tensor([[2.0, -1.0]])), network[0].bias.fill_(0.5)
    >>> explainer = Explainer(network, np.array([[0.0, 0.0], [1.0, 1.0]]), ["amount", "is_night"])
    >>> [explanation] = explainer.explain(np.array([[42.0, 0.0]]), np.array([[1.0, 0.0]]))
    >>> explanation.values.tolist(), explanation.base_value, explanation.output
    ([1.0, 0.5], 1.0, 2.5)
    >>> explanation.reasons(top=1)[0].label
    'amount is 42.00'
    """

    def __init__(
        self,
        network: nn.Module,
        background_scaled: np.ndarray,
        feature_names: Sequence[str],
        reason_templates: Mapping[str, str] | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        # shap takes seconds to import: only processes that build an explainer pay for it.
        import shap

        self.feature_names: tuple[str, ...] = tuple(feature_names)
        self.tolerance = float(tolerance)
        templates = DEFAULT_TEMPLATES if reason_templates is None else reason_templates
        self._templates = {name: templates[name] for name in self.feature_names if name in templates}
        _check_templates(self._templates)
        background = self._rows(background_scaled, "background_scaled")
        if not len(background):
            raise ExplainError("background_scaled has no rows")
        self._lock = threading.Lock()
        with _autograd():
            self._network = _private_copy(network)
            reference = torch.from_numpy(background)
            _check_output(self._network, reference)
            self._deep = shap.DeepExplainer(self._network, reference)
        self.base_value = float(np.asarray(self._deep.expected_value).reshape(-1)[0])
        self._probe(background[:PROBE_ROWS])

    @classmethod
    def for_artifact(
        cls,
        artifact: ExplainableArtifact,
        tolerance: float = DEFAULT_TOLERANCE,
        reason_templates: Mapping[str, str] | None = None,
    ) -> Explainer:
        """An explainer of the artifact's head, over its background transactions turned into head inputs."""
        background = artifact.head_inputs(artifact.background)
        return cls(artifact.head, background, artifact.input_names, reason_templates, tolerance)

    def explain(self, x_raw: np.ndarray, x_scaled: np.ndarray, logits: np.ndarray | None = None) -> list[Explanation]:
        """One explanation per row; a single row may be given as shape (F,).

        ``logits`` are the scores the model gave (shape (N,) or (N, 1)); when absent, the float64 copy
        computes them. Rows whose gap exceeds the tolerance are logged, never dropped or raised on.
        """
        raw = self._rows(x_raw, "x_raw")
        scaled = self._rows(x_scaled, "x_scaled")
        if len(raw) != len(scaled):
            raise ExplainError(f"x_raw has {len(raw)} rows but x_scaled has {len(scaled)}")
        if logits is not None:
            logits = np.asarray(logits, dtype=np.float64).reshape(-1)
            if len(logits) != len(scaled):
                raise ExplainError(f"got {len(logits)} logits for {len(scaled)} rows")
        explanations = self._explanations(raw, scaled, logits)
        failed = check_additivity(explanations, self.tolerance)
        if failed:
            worst = max(explanations[index].additivity_gap for index in failed)
            logger.warning("%d of %d explanations exceed the additivity tolerance %g (largest gap %g)",
                           len(failed), len(explanations), self.tolerance, worst)
        return explanations

    def _explanations(self, raw: np.ndarray, scaled: np.ndarray, logits: np.ndarray | None) -> list[Explanation]:
        if not len(scaled):
            return []
        inputs = torch.from_numpy(scaled)
        with self._lock, _autograd():
            try:
                values = self._deep.shap_values(inputs, check_additivity=False)
            except Exception as error:
                raise ExplainError(f"shap could not explain a batch of {len(scaled)} rows") from error
            if logits is None:
                with torch.no_grad():
                    logits = self._network(inputs).numpy().reshape(-1)
        values = np.asarray(values, dtype=np.float64).reshape(scaled.shape)
        return [
            Explanation(
                values=values[row],
                base_value=self.base_value,
                output=float(logits[row]),
                feature_names=self.feature_names,
                data=raw[row],
                labels=self._labels(raw[row]),
            )
            for row in range(len(scaled))
        ]

    def _labels(self, raw_row: np.ndarray) -> tuple[str, ...]:
        return tuple(
            reason_label(name, value, self._templates.get(name))
            for name, value in zip(self.feature_names, raw_row.tolist())
        )

    def _rows(self, array: Any, name: str) -> np.ndarray:
        """Inputs as a C-contiguous float64 (N, F) array, the layout torch.from_numpy shares without copying."""
        try:
            rows = np.ascontiguousarray(array, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ExplainError(f"{name} is not numeric") from error
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        if rows.ndim != 2 or rows.shape[1] != len(self.feature_names):
            raise ExplainError(f"{name} has shape {np.shape(array)}, expected (N, {len(self.feature_names)})")
        return rows

    def _probe(self, rows: np.ndarray) -> None:
        """Refuse a network whose explanations do not add up, before it explains a real alert."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            probe = self._explanations(rows, rows, None)
        failed = check_additivity(probe, self.tolerance)
        if failed:
            said = "; ".join(sorted({str(warning.message) for warning in caught})) or "no warning"
            worst = max(probe[index].additivity_gap for index in failed)
            raise ExplainError(
                f"network is not exactly explainable: gap {worst:g} > {self.tolerance:g} on background rows "
                f"(use nn.Linear/nn.ReLU modules, not functional activations; shap said: {said})"
            )


@contextmanager
def _autograd() -> Iterator[None]:
    """shap needs gradients even when the caller scores under ``no_grad`` or ``inference_mode``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _private_copy(network: nn.Module) -> nn.Module:
    """A float64 CPU copy in eval mode, weights frozen, in-place activations off: the only module shap hooks.

    The CPU suffices: each row is one pass over at most a few hundred background rows, too small for a
    GPU to pay for its transfers, and float64 is slow on most GPUs.
    """
    if not isinstance(network, nn.Module):
        raise ExplainError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    try:
        copied = copy.deepcopy(network)
    except Exception as error:
        raise ExplainError("network cannot be copied for explaining") from error
    copied = copied.to(device="cpu", dtype=torch.float64).eval()
    for parameter in copied.parameters():
        parameter.requires_grad_(False)
    for module in copied.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    return copied


def _check_output(network: nn.Module, reference: torch.Tensor) -> None:
    try:
        with torch.no_grad():
            output = network(reference)
    except Exception as error:
        raise ExplainError(f"network cannot score background rows of shape {tuple(reference.shape)}") from error
    if output.shape != (len(reference), 1):
        raise ExplainError(f"network must map (N, F) rows to (N, 1) logits, got {tuple(output.shape)}")


def _check_templates(templates: Mapping[str, str]) -> None:
    """Fail at build time on a template that could not be filled, not on the first alert."""
    for name, template in templates.items():
        try:
            reason_label(name, 0.5, template)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
            raise ExplainError(f"reason template for {name!r} cannot be filled with a value: {template!r}") from error


__all__ = ["DEFAULT_TEMPLATES", "PROBE_ROWS", "ExplainableArtifact", "Explainer"]
