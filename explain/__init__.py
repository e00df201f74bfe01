"""SHAP reasons for alerts: which features pushed a transaction's score up, in the model's log-odds.

Build one ``Explainer`` per model (``Explainer.for_artifact``), then call ``explain`` with the rows of
a batch that raised alerts. Each ``Explanation`` holds the values, the base value, the logit it
explains, the raw feature values and its additivity gap; ``reasons(top=...)`` gives the sentences an
analyst reads, and ``check_additivity`` flags explanations that do not add up to their score.
"""

from explain.deep import DEFAULT_TEMPLATES, ExplainableArtifact, Explainer
from explain.exceptions import ExplainError
from explain.explanation import (
    DEFAULT_TOLERANCE,
    Explanation,
    ExplanationSpace,
    Reason,
    check_additivity,
    reason_label,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "DEFAULT_TOLERANCE",
    "ExplainError",
    "ExplainableArtifact",
    "Explainer",
    "Explanation",
    "ExplanationSpace",
    "Reason",
    "check_additivity",
    "reason_label",
]
