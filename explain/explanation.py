"""The one result type for reasons: what alerts, audit rows and plots all consume.

An ``Explanation`` carries its own additivity gap, computed from its fields rather than passed in, so
an explanation that does not add up to the score it explains cannot hide it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from explain.exceptions import ExplainError

ExplanationSpace = Literal["log-odds"]
"""The unit of values, base value and output: the model's logit, before the sigmoid."""
_SPACES = frozenset(get_args(ExplanationSpace))

DEFAULT_TOLERANCE = 1e-4
"""Largest additivity gap, in log-odds per unit of logit beyond 1, an explanation may have before it is flagged
(see :func:`check_additivity`)."""


def reason_label(feature: str, value: float | None, template: str | None = None) -> str:
    """The sentence an analyst reads for one reason: its template filled with the raw value.

    A group of learned inputs has no single value (``None``): its template is its label as written.

    >>> reason_label("amount", 42.0, "amount is {value:.2f}")
    'amount is 42.00'
    >>> reason_label("merchant_score", 0.25)
    'merchant_score = 0.25'
    >>> reason_label("recent_spending_pattern", None)
    'recent spending pattern'
    """
    if value is None:
        return template if template is not None else feature.replace("_", " ")
    if template is None:
        return f"{feature} = {value:g}"
    return template.format(value=value)


@dataclass(frozen=True)
class Reason:
    """One reason's share of a score; a positive contribution pushes the score towards fraud.

    ``value`` is the feature's raw value, None for a group of learned inputs (or a missing value).
    """

    feature: str
    label: str
    value: float | None
    contribution: float


@dataclass(frozen=True, eq=False)
class Explanation:
    """SHAP values of one scored row: ``sum(values) + base_value`` equals ``output`` up to the gap.

    Parameters
    ----------
    values
        Each reason's contribution to the logit, shape (F,).
    base_value
        The weighted mean logit over the background rows.
    output
        The logit the model gave this row.
    feature_names
        Names of the F reasons (features, or groups of learned inputs), in model order.
    data
        The row's raw (unscaled) feature values, shape (F,); NaN for a group, which has no single value.
    labels
        One sentence per reason, filled with its raw value; empty means ``"<name> = <value>"``.
    space
        The unit of values, base value and output.

    Attributes
    ----------
    additivity_gap
        ``|sum(values) + base_value - output|``, computed here; NaN when any term is not finite.

    >>> explanation = Explanation(values=np.array([0.5, -1.5]), base_value=-2.0, output=-3.0,
    ...                           feature_names=("amount", "is_night"), data=np.array([12.0, 1.0]))
    >>> explanation.additivity_gap
    0.0
    >>> [(reason.feature, reason.contribution) for reason in explanation.reasons()]
    [('is_night', -1.5), ('amount', 0.5)]
    >>> round(explanation.probability, 4)
    0.0474
    """

    values: np.ndarray
    base_value: float
    output: float
    feature_names: tuple[str, ...]
    data: np.ndarray
    labels: tuple[str, ...] = ()
    space: ExplanationSpace = "log-odds"
    additivity_gap: float = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(self.feature_names)
        values = _frozen_vector(self.values, len(names), "values")
        data = _frozen_vector(self.data, len(names), "data")
        labels = tuple(self.labels)
        if labels and len(labels) != len(names):
            raise ExplainError(f"got {len(labels)} labels for {len(names)} features")
        if self.space not in _SPACES:
            raise ExplainError(f"unknown explanation space {self.space!r}")
        base_value, output = float(self.base_value), float(self.output)
        terms = [*values.tolist(), base_value, -output]
        gap = abs(math.fsum(terms)) if all(map(math.isfinite, terms)) else math.nan
        for name, attribute in (("values", values), ("base_value", base_value), ("output", output),
                                ("feature_names", names), ("data", data), ("labels", labels),
                                ("additivity_gap", gap)):
            object.__setattr__(self, name, attribute)

    @property
    def probability(self) -> float:
        """The model's score: the sigmoid of the logit, computed without overflow."""
        if self.output >= 0:
            return 1.0 / (1.0 + math.exp(-self.output))
        odds = math.exp(self.output)
        return odds / (1.0 + odds)

    def reasons(self, top: int | None = None) -> list[Reason]:
        """Reasons by the size of their contribution, largest first (ties keep model order).

        Pass ``top`` to keep only the first few, as an alert does.
        """
        return [Reason(**record) for record in self.records(top)]

    def records(self, top: int | None = None) -> list[dict[str, Any]]:
        """``reasons`` as plain dicts, the fields of an Avro ``Reason``: what alerts and audit rows carry.

        >>> Explanation(values=np.array([1.0]), base_value=0.0, output=1.0, feature_names=("amount",),
        ...             data=np.array([5.0])).records()
        [{'feature': 'amount', 'label': 'amount = 5', 'value': 5.0, 'contribution': 1.0}]
        """
        if top is not None and top < 0:
            raise ExplainError(f"top must be at least 0, got {top}")
        order = np.argsort(-np.abs(self.values), kind="stable")[:top].tolist()
        names, values = self.feature_names, self.values.tolist()
        raw = [None if math.isnan(value) else value for value in self.data.tolist()]
        labels = self.labels or [reason_label(name, value) for name, value in zip(names, raw)]
        return [
            {"feature": names[index], "label": labels[index], "value": raw[index], "contribution": values[index]}
            for index in order
        ]

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        """Plain JSON-ready fields for an alert or an audit row, reasons ordered as in ``reasons``.

        >>> Explanation(values=np.array([1.0]), base_value=0.0, output=1.0, feature_names=("amount",),
        ...             data=np.array([5.0])).to_dict()["reasons"][0]["label"]
        'amount = 5'
        """
        return {
            "space": self.space,
            "base_value": self.base_value,
            "output": self.output,
            "probability": self.probability,
            "additivity_gap": self.additivity_gap,
            "reasons": self.records(top),
        }


def check_additivity(explanations: Sequence[Explanation], tolerance: float = DEFAULT_TOLERANCE) -> list[int]:
    """Indices of the explanations whose gap exceeds ``tolerance * max(1, |output|)``; a NaN gap always fails.

    The tolerance is relative beyond a logit of 1 because the model's logit is float32 while the reasons add up
    in float64: for a logit in the thousands (a very large amount) rounding alone exceeds any absolute tolerance
    small enough to catch a wrong explanation of an ordinary one.

    >>> row = {"values": np.array([1.0]), "output": 1.5, "feature_names": ("amount",), "data": np.array([3.0])}
    >>> check_additivity([Explanation(base_value=0.5, **row), Explanation(base_value=0.51, **row)], tolerance=1e-4)
    [1]
    """
    return [
        index for index, explanation in enumerate(explanations)
        if not explanation.additivity_gap <= tolerance * max(1.0, abs(explanation.output))
    ]


def _frozen_vector(array: Any, length: int, name: str) -> np.ndarray:
    """A read-only float64 copy of a 1-D array, so a frozen explanation stays what it was."""
    vector = np.array(array, dtype=np.float64)
    if vector.shape != (length,):
        raise ExplainError(f"{name} has shape {np.shape(array)}, expected ({length},)")
    vector.setflags(write=False)
    return vector


__all__ = [
    "DEFAULT_TOLERANCE",
    "Explanation",
    "ExplanationSpace",
    "Reason",
    "check_additivity",
    "reason_label",
]
