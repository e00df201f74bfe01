"""SHAP reasons for alerts: which inputs pushed a transaction's score up, in the model's log-odds.

Build one ``Explainer`` per model: the head network, its input names, the groups of inputs that form one
reason, and a weighted background (``summarise``). Then call ``explain`` with the head inputs of a batch's
alerts. Each ``Explanation`` holds the values, the base value, the logit it explains, the raw feature values
and its additivity gap; ``reasons(top=...)`` gives the sentences an analyst reads, and ``check_additivity``
flags explanations that do not add up to their score. ``DeepLift`` computes the values in closed form.
"""

from explain.background import summarise
from explain.deep import DEFAULT_TEMPLATES, ExplainableArtifact, Explainer
from explain.deeplift import Background, DeepLift
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
    "Background",
    "DeepLift",
    "ExplainError",
    "ExplainableArtifact",
    "Explainer",
    "Explanation",
    "ExplanationSpace",
    "Reason",
    "check_additivity",
    "reason_label",
    "summarise",
]
