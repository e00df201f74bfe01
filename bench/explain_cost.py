"""What explaining alerts costs: per alert, in batches and alone, and in scoring throughput at a 1% alert rate.

    python bench/explain_cost.py [--repeats 15] [--passes 9] [--background 16]

Runs on one torch thread, as the worker does. The model is the serving architecture (the behaviour model with
the training defaults: a GRU summary of each card's recent sequence, the knot encoding found on 20 simulated
days, and an MLP head) with untrained weights: the cost of exact SHAP does not depend on what the weights learned. Rows are simulated transactions' model inputs. "without explanations" is the same Scorer with the explaining step
skipped (its alerts carry no reasons); the two are timed alternately, batch after batch, over several passes,
and their throughputs compared (see ``throughput``), by the wall clock and by the thread's CPU time.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explain import Explainer  # noqa: E402
from explain.background import DEFAULT_SIZE  # noqa: E402
from models.dataset import normalize  # noqa: E402
from models.features import DAY, FEATURE_NAMES  # noqa: E402
from models.network import ModelArtifact, ModelInputs  # noqa: E402
from models.replay import replay_features  # noqa: E402
from models.simulate import simulate  # noqa: E402
from models.train import TrainConfig, fit  # noqa: E402
from stream.pipeline import Scorer  # noqa: E402
from stream.privacy import DEMO_KEY, Tokenizer  # noqa: E402
from timing import median_ms  # noqa: E402


class UnexplainedScorer(Scorer):
    """The same scoring, decisions and alerts, with the explaining step skipped: the baseline."""

    def _explain(self, transactions, rows, features, head_inputs, logits):  # type: ignore[no-untyped-def]
        return dict.fromkeys(rows.tolist()), set()


def artifact_and_rows() -> tuple[ModelArtifact, ModelInputs]:
    """The serving artifact (scaling, knots, background) with its starting weights: trained at a learning rate of 0."""
    frame = normalize(simulate(n_customers=500, n_terminals=1000, n_days=30, seed=1))
    features, labels = replay_features(frame), frame["label"].to_numpy()
    train = frame["time"].to_numpy() < frame["time"].min() + 20 * DAY
    config = replace(TrainConfig(), epochs=1, lr=0.0)
    return fit(features[train], labels[train], features[~train], labels[~train], FEATURE_NAMES, config), features


def per_alert_costs(artifact: ModelArtifact, features: ModelInputs, repeats: int, background: int) -> tuple[float, float]:
    """(ms per alert in batches of 64, ms for one alert) of the serving explainer."""
    inputs, data = artifact.head_inputs(features[:64]), features.features[:64]
    explainer = Explainer.for_artifact(artifact, background_size=background)
    batch = median_ms(lambda: explainer.explain(inputs, data), repeats) / len(inputs)
    single = median_ms(lambda: explainer.explain(inputs[:1], data[:1]), repeats * 4)
    return batch, single


def throughput(artifact: ModelArtifact, features: ModelInputs, passes: int, background: int, batch: int = 500) -> tuple[dict[str, dict[str, float]], float]:
    """Per clock and scorer, transactions/s over all the batches; the alert rate in %.

    Each pass scores every batch with and without explanations, alternately, so the two share the machine's
    state. A batch's time is its median over the passes (a pause of the shared machine hits one pass, not
    all), and the rate is the rows over the sum of the batches' times: batches with many alerts weigh in
    full. The thread's CPU time leaves out the time other processes take the core.
    """
    rows = features[: batch * (len(features) // batch)]
    threshold_logit = float(np.quantile(artifact.predict_logit(rows), 0.99))
    transactions = [
        {"tx_id": str(index), "event_time": 0, "card_id": "c", "terminal_id": "t", "amount": float(row[0])}
        for index, row in enumerate(rows.features)
    ]
    explainer = Explainer.for_artifact(artifact, background_size=background)
    scorers = {
        "with": Scorer(artifact, explainer, threshold_logit=threshold_logit, tokenize=Tokenizer(DEMO_KEY)),
        "without": UnexplainedScorer(artifact, explainer, threshold_logit=threshold_logit, tokenize=Tokenizer(DEMO_KEY)),
    }
    clocks = {"wall clock": time.perf_counter, "thread CPU time": time.thread_time}
    starts = range(0, len(rows), batch)
    times = {clock: {name: np.zeros((passes, len(starts))) for name in scorers} for clock in clocks}
    alerts = 0
    for one_pass in range(passes):
        for column, start in enumerate(starts):
            chunk, tx = rows[start : start + batch], transactions[start : start + batch]
            for name, scorer in scorers.items():
                started = {clock: now() for clock, now in clocks.items()}
                result = scorer.score(tx, chunk, now_ms=0)
                for clock, now in clocks.items():
                    times[clock][name][one_pass, column] = now() - started[clock]
                alerts += len(result.alerts) if name == "with" else 0
    rates = {
        clock: {name: len(rows) / float(np.median(spent, axis=0).sum()) for name, spent in by_scorer.items()}
        for clock, by_scorer in times.items()
    }
    return rates, round(alerts / (passes * len(rows)) * 100, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls for the per-alert costs")
    parser.add_argument("--passes", type=int, default=9, help="passes over the rows for the throughputs")
    parser.add_argument("--background", type=int, default=DEFAULT_SIZE, help="weighted background rows (the serving default)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")
    artifact, features = artifact_and_rows()
    config = TrainConfig()
    knots = sum(len(column) for column in artifact.network.knots)
    print(f"model: GRU summary ({config.summary_size}) + MLP {len(artifact.input_names)} (+ {knots} knots) -> {config.hidden} -> 1, "
          f"background {args.background} weighted rows, {len(features):,} simulated rows, {args.repeats} repeats, 1 torch thread")
    print(f"{'case':<45} {'ms/alert, batch 64':>20} {'ms, single alert':>18}")
    batch, single = per_alert_costs(artifact, features, args.repeats, args.background)
    print(f"{'head over features + sequence summary group':<45} {batch:>20.3f} {single:>18.3f}")
    rates, alert_rate = throughput(artifact, features, args.passes, args.background)
    print(f"{f'scoring throughput, batches of 500, {alert_rate}% alerts':<45} {'with explanations':>20} {'without':>18}")
    for clock, rate in rates.items():
        print(f"{f'  transactions/s, {clock}':<45} {rate['with']:>20,.0f} {rate['without']:>18,.0f}")
    print("ratio with/without explanations: "
          + ", ".join(f"{rate['with'] / rate['without']:.3f} by {clock}" for clock, rate in rates.items()) + " (target >= 0.90)")


if __name__ == "__main__":
    main()
