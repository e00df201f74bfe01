"""The background an explanation is measured against: a few weighted rows that summarise the training data.

SHAP values say how a row differs from the background's average output, so the background should look like
ordinary traffic; their cost grows with its size. ``shap.kmeans`` keeps the shape of a few hundred sampled
rows in a few dozen cluster centres weighted by their cluster's size, and is deterministic (a fixed seed), so
the same sample always gives the same background and the same explanations.
"""

from __future__ import annotations

import numpy as np

from explain.deeplift import Background
from explain.exceptions import ExplainError

DEFAULT_SIZE = 8
"""Weighted rows kept: an explanation's cost grows linearly with the background's size. Against the whole
200-row sample, 8 centres keep every top reason and 99 % of the top fives, as 16 do, and keep scoring with
explanations within 10 % of scoring without (``bench/explain_background.py``, ``bench/explain.py``)."""


def summarise(rows: np.ndarray, size: int = DEFAULT_SIZE) -> Background:
    """Up to ``size`` weighted rows summarising ``rows`` (in the explained network's input space).

    A sample no larger than ``size`` is kept as it is, each row with equal weight.

    >>> summarise(np.arange(6.0).reshape(3, 2)).weights.tolist()
    [0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    >>> len(summarise(np.random.default_rng(0).normal(size=(100, 3)), size=8).rows)
    8
    """
    sample = np.array(rows, dtype=np.float64, ndmin=2)
    if size < 1:
        raise ExplainError(f"a background needs at least one row, got size={size}")
    if len(sample) <= size:
        return Background.uniform(sample)
    if not np.all(np.isfinite(sample)):
        raise ExplainError("background sample has non-finite values")
    # shap takes seconds to import: only processes that summarise a background pay for it.
    import shap

    summary = shap.kmeans(sample, size)
    return Background(summary.data, summary.weights)


__all__ = ["DEFAULT_SIZE", "summarise"]
