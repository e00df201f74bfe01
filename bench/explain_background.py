"""What the background's size buys: explaining cost against agreement with the whole stored background.

    python bench/explain_background.py [--sizes 8,16,32,64]

A model trained on simulated transactions (the drills' data and training) explains its 300 highest-scoring
transactions of the days after training, once against all 200 background rows stored in its artifact and
once against each ``shap.kmeans`` summary of them. Reported per size: the median time to explain an alert
batch of five (the 1 % alerts of a batch of 500), the base value, how often the top reason and the top five
are the same as with the whole background, and the mean absolute difference of the reasons' values.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explain import Background, Explainer, summarise  # noqa: E402
from explain.background import DEFAULT_SIZE  # noqa: E402
from models.replay import replay_features  # noqa: E402
from stream.drill import simulated  # noqa: E402
from timing import median_ms  # noqa: E402

TRAIN_DAYS, DAYS, EXPLAINED = 30, 45, 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,16,32,64", help="background sizes to compare, comma-separated")
    parser.add_argument("--repeats", type=int, default=500, help="timed calls per size")
    args = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")
    frame, artifact = simulated(600, DAYS, train_days=TRAIN_DAYS)
    later = replay_features(frame[frame["time"] >= frame["time"].min() + TRAIN_DAYS * 86_400].reset_index(drop=True))
    top = later[np.argsort(-artifact.predict_proba(later))[:EXPLAINED]]
    inputs, data = artifact.head_inputs(top), top.features
    stored = artifact.head_inputs(artifact.background)

    def explainer(background: Background) -> Explainer:
        return Explainer(artifact.head, background, artifact.input_names, artifact.input_groups)

    whole = np.array([explanation.values for explanation in explainer(Background.uniform(stored)).explain(inputs, data)])
    print(f"{EXPLAINED} highest-scoring transactions of days {TRAIN_DAYS}-{DAYS}, stored background {len(stored)} rows, "
          f"1 torch and 1 BLAS thread; serving default {DEFAULT_SIZE}")
    print(f"{'background rows':>15} {'ms, 5 alerts':>13} {'base value':>11} {'top reason same':>16} {'top-5 overlap':>14} {'mean |Δ value|':>15}")
    costs = {}
    for size in [*map(int, args.sizes.split(",")), len(stored)]:
        chosen = explainer(summarise(stored, size))
        costs[size] = median_ms(lambda: chosen.explain(inputs[:5], data[:5]), args.repeats)
        explanations = chosen.explain(inputs, data)
        values = np.array([explanation.values for explanation in explanations])
        order, reference = np.argsort(-np.abs(values), axis=1), np.argsort(-np.abs(whole), axis=1)
        same_top = np.mean(order[:, 0] == reference[:, 0])
        overlap = np.mean([len(set(a[:5]) & set(b[:5])) / 5 for a, b in zip(order, reference)])
        print(f"{size:>15} {costs[size]:>13.3f} {explanations[0].base_value:>11.3f} {same_top:>16.1%} {overlap:>14.1%} "
              f"{np.abs(values - whole).mean():>15.4f}")
    print(f"mean |value| with the whole background: {np.abs(whole).mean():.4f}")
    print(f"ratio: {DEFAULT_SIZE} rows cost {costs[DEFAULT_SIZE] / costs[len(stored)]:.2f} of the whole background's time")


if __name__ == "__main__":
    main()
