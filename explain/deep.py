"""Named reasons for alerts: exact SHAP values of the model's MLP head, in log-odds, summed into reasons.

The explained function is the head, a Linear/activation stack over the head's inputs (the scaled features,
and later the learned summary of the card's recent sequence). Its SHAP values come in closed form
(:class:`explain.deeplift.DeepLift`, the numbers ``shap.DeepExplainer`` gives), so they add up to the logit
minus the background's mean logit up to rounding. Several input columns may form one reason (``groups``): the
summary's columns are one "recent spending pattern", not a list of anonymous numbers. A fixed per-feature
transform before the head does not change which feature gets which share, so each reason reports the
feature's raw value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from string import Formatter
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
from torch import nn

from explain.background import DEFAULT_SIZE, summarise
from explain.deeplift import Background, DeepLift
from explain.exceptions import ExplainError
from explain.explanation import DEFAULT_TOLERANCE, Explanation, reason_label
from models.features import FEATURES

DEFAULT_TEMPLATES: Mapping[str, str] = MappingProxyType({feature.name: feature.reason for feature in FEATURES})
"""Reason templates of the model's features, used when an explainer is given none."""
LABEL_SEPARATOR = "\x1f"
"""Between reasons' labels in the one format string that fills them (ASCII unit separator, never in a label)."""


class ExplainableArtifact(Protocol):
    """What ``Explainer.for_artifact`` reads from a model artifact."""

    @property
    def head(self) -> nn.Module: ...

    @property
    def input_names(self) -> Sequence[str]: ...

    @property
    def input_groups(self) -> Mapping[str, Sequence[int]]: ...

    @property
    def background(self) -> Any: ...

    @property
    def explanation_background(self) -> tuple[np.ndarray, np.ndarray] | None: ...

    def head_inputs(self, inputs: Any) -> np.ndarray: ...


class Explainer:
    """Explains a batch of scored rows in one call; built once per model, reused for every alert.

    Parameters
    ----------
    network
        The head: an ``nn.Sequential`` of Linear layers and elementwise activations mapping its inputs
        ``(N, D)`` to logits ``(N, 1)``. Its weights are copied; the module itself is never touched.
    background
        Weighted reference rows in the head's input space (see :func:`explain.background.summarise`);
        the base value is their weighted mean logit.
    input_names
        The D head input names, in order.
    groups
        Reason name → head input columns explained together as that one reason (e.g. the sequence
        summary's columns). A group has no single raw value; its label is its template, or its name with
        spaces. Every other column is a reason of its own.
    reason_templates
        A ``{value}`` template per reason name; features without one read ``"<name> = <value>"``.
        Defaults to the templates in ``models.features``.
    tolerance
        The additivity gap above which a caller should flag an explanation (``check_additivity``).

    Explaining keeps no state between calls, so one explainer may serve several threads.

    >>> import torch
    >>> network = nn.Sequential(nn.Linear(3, 1))
    >>> with torch.no_grad():
    ...     _ = network[0].weight.copy_(torch.tensor([[2.0, -1.0, 0.5]])), network[0].bias.fill_(0.5)
    >>> explainer = Explainer(network, Background.uniform(np.zeros((1, 3))), ["amount", "s_0", "s_1"],
    ...                       groups={"recent_spending_pattern": [1, 2]})
    >>> [explanation] = explainer.explain(np.array([[1.0, 1.0, 4.0]]), data=np.array([[42.0]]))
    >>> [(reason.feature, reason.value, reason.contribution) for reason in explanation.reasons()]
    [('amount', 42.0, 2.0), ('recent_spending_pattern', None, 1.0)]
    >>> explanation.reasons()[1].label, explanation.additivity_gap
    ('recent spending pattern', 0.0)
    """

    def __init__(
        self,
        network: nn.Module,
        background: Background,
        input_names: Sequence[str],
        groups: Mapping[str, Sequence[int]] | None = None,
        reason_templates: Mapping[str, str] | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        self.input_names: tuple[str, ...] = tuple(input_names)
        self.tolerance = float(tolerance)
        self._deeplift = DeepLift(network, background)
        if self._deeplift.n_inputs != len(self.input_names):
            raise ExplainError(f"network takes {self._deeplift.n_inputs} inputs but {len(self.input_names)} names were given")
        self.reason_names, self._reason_of_input = _reasons(self.input_names, groups or {})
        self._grouped = frozenset(groups or {})
        self._ungrouped = np.array([name not in self._grouped for name in self.reason_names])
        self._sum = np.zeros((len(self.input_names), len(self.reason_names)))
        self._sum[np.arange(len(self.input_names)), self._reason_of_input] = 1.0
        templates = DEFAULT_TEMPLATES if reason_templates is None else reason_templates
        self._templates = {name: templates[name] for name in self.reason_names if name in templates}
        _check_templates(self._templates)
        self._labels_format = _labels_format(self.reason_names, self._grouped, self._templates)
        self.base_value = self._deeplift.base_value

    @classmethod
    def for_artifact(
        cls,
        artifact: ExplainableArtifact,
        tolerance: float = DEFAULT_TOLERANCE,
        reason_templates: Mapping[str, str] | None = None,
        background_size: int = DEFAULT_SIZE,
    ) -> Explainer:
        """An explainer of the artifact's head, its inputs grouped as the artifact says.

        The background transactions chosen at training time are turned into head inputs, then summarised in
        ``background_size`` weighted rows: the summary saved with the model at training when it has as many
        rows as asked for (no shap import, no clustering), else summarised now.
        """
        saved = artifact.explanation_background
        if saved is not None and len(saved[0]) == min(background_size, len(artifact.background)):
            background = Background(*saved)
        else:
            background = summarise(artifact.head_inputs(artifact.background), background_size)
        return cls(artifact.head, background, artifact.input_names, artifact.input_groups, reason_templates, tolerance)

    @property
    def n_data(self) -> int:
        """Columns of ``data`` that :meth:`explain` expects: one raw value per ungrouped input."""
        return int(self._ungrouped.sum())

    def explain(self, inputs: np.ndarray, data: np.ndarray, logits: np.ndarray | None = None) -> list[Explanation]:
        """One explanation per row of head inputs ``(N, D)``; a single row may be given as shape ``(D,)``.

        ``data`` holds each row's raw values of the ungrouped inputs ``(N, n_data)``, in input order: what
        the reasons report (for a head over features then a summary, the raw feature rows). ``logits`` are
        the scores the model gave (shape ``(N,)`` or ``(N, 1)``); when absent, the float64 copy computes them.
        An explanation that does not add up keeps its gap (``check_additivity`` finds it); nothing is dropped.
        """
        values = self._deeplift.values(inputs)
        raw = _rows(data, self.n_data, "data")
        if len(raw) != len(values):
            raise ExplainError(f"data has {len(raw)} rows but inputs have {len(values)}")
        if logits is None:
            outputs = self._deeplift.outputs(inputs)
        else:
            outputs = np.asarray(logits, dtype=np.float64).reshape(-1)
            if len(outputs) != len(values):
                raise ExplainError(f"got {len(outputs)} logits for {len(values)} rows")
        reason_values = values @ self._sum
        reason_data = np.full(reason_values.shape, np.nan)
        reason_data[:, self._ungrouped] = raw
        return [
            Explanation(
                values=reason_values[row],
                base_value=self.base_value,
                output=float(outputs[row]),
                feature_names=self.reason_names,
                data=reason_data[row],
                labels=self._labels(reason_data[row]),
            )
            for row in range(len(values))
        ]

    def _labels(self, data_row: np.ndarray) -> tuple[str, ...]:
        return tuple(self._labels_format.format(*data_row.tolist()).split(LABEL_SEPARATOR))


def _reasons(input_names: tuple[str, ...], groups: Mapping[str, Sequence[int]]) -> tuple[tuple[str, ...], np.ndarray]:
    """Reason names (each group where its first column is) and the reason index of every input column."""
    if len(set(input_names)) != len(input_names):
        raise ExplainError("input names must be unique")
    group_of: dict[int, str] = {}
    for name, columns in groups.items():
        if not columns:
            raise ExplainError(f"group {name!r} has no columns")
        for column in columns:
            if not 0 <= column < len(input_names):
                raise ExplainError(f"group {name!r} names column {column}, the network has {len(input_names)} inputs")
            if column in group_of:
                raise ExplainError(f"column {column} is in both {group_of[column]!r} and {name!r}")
            group_of[column] = name
    ungrouped = {input_names[column] for column in range(len(input_names)) if column not in group_of}
    if ungrouped & set(groups):
        raise ExplainError(f"group names {sorted(ungrouped & set(groups))} are also names of ungrouped inputs")
    names: list[str] = []
    index: list[int] = []
    for column, input_name in enumerate(input_names):
        name = group_of.get(column, input_name)
        if name not in names:
            names.append(name)
        index.append(names.index(name))
    return tuple(names), np.array(index)


def _rows(array: np.ndarray, columns: int, name: str) -> np.ndarray:
    try:
        rows = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ExplainError(f"{name} is not numeric") from error
    rows = rows.reshape(1, -1) if rows.ndim == 1 else rows
    if rows.ndim != 2 or rows.shape[1] != columns:
        raise ExplainError(f"{name} has shape {np.shape(array)}, expected (N, {columns})")
    return rows


def _labels_format(names: Sequence[str], grouped: frozenset[str], templates: Mapping[str, str]) -> str:
    """Every reason's ``reason_label`` as one format string over a row's values, split at LABEL_SEPARATOR.

    One ``str.format`` call labels an alert's reasons: a call per reason cost more than the rest of its
    explanation. A group's label is fixed text; a feature's template has its ``{value}`` fields renumbered
    to the feature's position in the row.
    """
    parts = []
    for position, name in enumerate(names):
        template = templates.get(name)
        if name in grouped:
            parts.append(_literal(reason_label(name, None, template)))
        elif template is None:
            parts.append(f"{_literal(name)} = {{{position}:g}}")
        else:
            parts.append(_positional(name, template, position))
    return LABEL_SEPARATOR.join(parts)


def _positional(name: str, template: str, position: int) -> str:
    """``template`` with its ``{value…}`` fields reading argument ``position`` instead."""
    rebuilt = []
    for literal, field, spec, conversion in Formatter().parse(template):
        rebuilt.append(_literal(literal))
        if field is None:
            continue
        if field.split(".")[0].split("[")[0] != "value" or "{" in (spec or ""):
            raise ExplainError(f"reason template for {name!r} may only use the field {{value}}: {template!r}")
        rebuilt.append("{" + str(position) + field[len("value"):] + (f"!{conversion}" if conversion else "")
                       + (f":{spec}" if spec else "") + "}")
    return "".join(rebuilt)


def _literal(text: str) -> str:
    if LABEL_SEPARATOR in text:
        raise ExplainError(f"reason label text may not contain {LABEL_SEPARATOR!r}: {text!r}")
    return text.replace("{", "{{").replace("}", "}}")


def _check_templates(templates: Mapping[str, str]) -> None:
    """Fail at build time on a template that could not be filled, not on the first alert."""
    for name, template in templates.items():
        try:
            reason_label(name, 0.5, template)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
            raise ExplainError(f"reason template for {name!r} cannot be filled with a value: {template!r}") from error


__all__ = ["DEFAULT_TEMPLATES", "ExplainableArtifact", "Explainer"]
