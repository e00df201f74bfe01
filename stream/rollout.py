"""Model roll-out in the worker: which versions the registry asks it to serve, and the shadow challenger's scores.

The worker (``stream.app.Serving``) reads the registry's pointers every ``model_poll_interval_s``; when they
change it loads and verifies the new models off the event loop and swaps them in between two batches, so every
event is scored once, by the models in force when its batch started. A shadow challenger scores every event
too; its scores go to the audit store with the decision, and it never alerts.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy.special import expit

from models.network import ModelArtifact, ModelInputs
from models.registry import champion_version, shadow_version

__all__ = ["Pointers", "add_shadow_scores", "read_pointers"]


@dataclass(frozen=True)
class Pointers:
    """The versions a worker should serve: the champion (alerts) and an optional shadow (scores only)."""

    champion: str
    shadow: str | None = None


def read_pointers(registry: str, pinned: str | None = None) -> Pointers:
    """The registry's CHAMPION and SHADOW, or ``pinned`` as the champion when the worker is pinned to a version."""
    return Pointers(pinned or champion_version(registry), shadow_version(registry))


def add_shadow_scores(decisions: list[dict], shadow: ModelArtifact, inputs: ModelInputs) -> None:
    """Add the shadow model's score of each decision's inputs (same rows, same order) to the decisions.

    >>> import numpy as np
    >>> from models.network import BehaviourModel
    >>> empty = ModelInputs(np.zeros((1, 1)), np.zeros((1, 8, 4)))
    >>> shadow = ModelArtifact("v2", ("a",), BehaviourModel(1, (2,), 4, 2), np.zeros(1), np.ones(1), empty, 1.0, 7.0)
    >>> decisions = [{"tx_id": "t1"}]
    >>> add_shadow_scores(decisions, shadow, empty)
    >>> decisions[0]["shadow_model_version"], decisions[0]["shadow_is_alert"]
    ('v2', False)
    """
    logits = shadow.predict_logit(inputs)
    scores = expit(logits)
    for decision, logit, score, alert in zip(decisions, logits.tolist(), scores.tolist(), shadow.alerts(logits).tolist(), strict=True):
        decision.update(shadow_model_version=shadow.version, shadow_score=score, shadow_score_logit=logit, shadow_is_alert=alert)
