"""The training data's reference profile, against which the audit store measures drift (population stability).

For the score and each feature the profile keeps the cut points of (at most) ``bins`` quantile bins of the
training rows and the share of those rows in each bin. Repeated cut points (a flag, a count that is mostly
zero) are merged, so a bin is never empty by construction. Bin ``i`` (0-based) holds values ``v`` with
``edges[i-1] <= v < edges[i]``: numpy's ``searchsorted(edges, v, side="right")``, and in SQL the number of
edges ``<= v``. The audit store's ``drift`` view computes the same PSI as :func:`population_stability`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from models.exceptions import ModelError

__all__ = ["PSI_FLOOR", "population_stability", "reference_profile"]

#: Shares below this count as this in PSI, so an empty bin adds a large but finite term.
PSI_FLOOR = 1e-4


def _binned(values: np.ndarray, bins: int) -> dict[str, list[float]]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"edges": [], "expected": [1.0]}
    edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=edges.size + 1)
    return {"edges": edges.tolist(), "expected": (counts / counts.sum()).tolist()}


def reference_profile(x_raw: np.ndarray, scores: np.ndarray, feature_names: Sequence[str], bins: int = 10) -> dict:
    """Quantile bins and expected shares of the scores and of each raw feature column; plain JSON types.

    >>> x = np.column_stack([np.arange(100.0), np.r_[np.zeros(90), np.ones(10)]])
    >>> profile = reference_profile(x, np.linspace(0, 1, 100), ["amount", "is_night"], bins=4)
    >>> profile["features"]["amount"]["edges"], profile["features"]["amount"]["expected"]
    ([24.75, 49.5, 74.25], [0.25, 0.25, 0.25, 0.25])
    >>> profile["features"]["is_night"]
    {'edges': [0.0], 'expected': [0.0, 1.0]}
    >>> profile["feature_names"], profile["rows"]
    (['amount', 'is_night'], 100)
    """
    x = np.asarray(x_raw, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    names = list(feature_names)
    if x.ndim != 2 or x.shape != (scores.size, len(names)):
        raise ModelError(f"reference profile needs {scores.size} rows of {len(names)} features, got shape {x.shape}")
    if bins < 2:
        raise ModelError(f"reference profile needs at least 2 bins, got {bins}")
    return {
        "bins": bins,
        "rows": int(scores.size),
        "feature_names": names,
        "score": _binned(scores, bins),
        "features": {name: _binned(x[:, column], bins) for column, name in enumerate(names)},
    }


def population_stability(reference: Mapping[str, Sequence[float]], values: np.ndarray) -> float:
    """PSI of ``values`` against one entry of a profile: sum of ``(actual - expected) * ln(actual / expected)``.

    Below 0.1 is usually read as stable, above 0.25 as a shift worth a look.

    >>> entry = {"edges": [0.5], "expected": [0.5, 0.5]}
    >>> population_stability(entry, np.array([0.0, 1.0])), round(population_stability(entry, np.array([0.0, 0.0])), 3)
    (0.0, 4.604)
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    counts = np.bincount(np.searchsorted(np.asarray(reference["edges"]), values, side="right"), minlength=len(reference["expected"]))
    actual = np.maximum(counts / max(values.size, 1), PSI_FLOOR)
    expected = np.maximum(np.asarray(reference["expected"], dtype=np.float64), PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))
