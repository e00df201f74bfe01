"""What the behaviour model costs: inference per batch of 500 and training time per epoch, on CPU and CUDA.

    python bench/model_cost.py [--customers 2000] [--days 21] [--repeats 200]

Data: simulated transactions (no data set needed), replayed through the feature code. Inference is what the
worker does per batch: the GRU summary of each card's sequence, then the head, from raw model inputs to
logits; on the CPU with one torch thread, as the worker runs; on CUDA including the transfers. Training is
`models.train.fit` with the default hyper-parameters for a few epochs (each epoch includes its validation pass);
its time per epoch is the fit's time divided by the epochs run. Medians over repeats.

It also times what a worker does with the model when it starts, each time in a fresh process: load it from
the registry and build its explainer, for the model as saved (with the explainer's summarised background)
and for the same model saved without that summary, as models were before it was stored.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.dataset import normalize  # noqa: E402
from models.features import DAY, FEATURE_NAMES  # noqa: E402
from models.network import ModelArtifact, ModelInputs, sequence_inputs  # noqa: E402
from models.registry import save_artifact  # noqa: E402
from models.replay import replay_features  # noqa: E402
from models.simulate import simulate  # noqa: E402
from models.train import TrainConfig, fit  # noqa: E402
from timing import median_ms  # noqa: E402

BATCH = 500
LOAD = """
import sys, time
from explain import Explainer
from models.registry import load_artifact
started = time.perf_counter()
Explainer.for_artifact(load_artifact(sys.argv[1]))
print(time.perf_counter() - started)
"""
"""A worker's model load at start, in a fresh interpreter, timed after the imports (torch, numpy) every worker has made."""


def inference_ms(artifact: ModelArtifact, batch: ModelInputs, device: torch.device, repeats: int) -> float:
    """Median milliseconds from raw inputs of one batch to its logits (back on the host)."""
    if device.type == "cpu":
        return median_ms(lambda: artifact.predict_logit(batch), repeats)
    network = artifact.network.to(device)

    def run() -> None:
        features = torch.from_numpy(artifact.scale(batch.features)).to(device)
        sequences = torch.from_numpy(sequence_inputs(batch.sequences)).to(device)
        with torch.no_grad():
            network(features, sequences).cpu()

    run()  # the first call pays for CUDA's kernels and caches
    result = median_ms(run, repeats)
    network.to("cpu")
    return result


def serving_load_s(artifact: ModelArtifact, repeats: int) -> tuple[float, float]:
    """Median seconds to load ``artifact`` and build its explainer in a fresh process: as saved, and saved
    without the explainer's summary (the two alternate, so that a busy moment hits both alike)."""
    times: tuple[list[float], list[float]] = ([], [])
    with tempfile.TemporaryDirectory() as root:
        registries = (Path(root, "summarised"), Path(root, "not-summarised"))
        save_artifact(artifact, registries[0])
        save_artifact(replace(artifact, explanation_background=None), registries[1])
        for _ in range(repeats):
            for registry, results in zip(registries, times):
                run = subprocess.run([sys.executable, "-c", LOAD, str(registry)], capture_output=True, text=True, check=True,
                                     cwd=Path(__file__).resolve().parent.parent)
                results.append(float(run.stdout))
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--load-repeats", type=int, default=3, help="fresh processes per way of loading the model")
    args = parser.parse_args()

    frame = normalize(simulate(n_customers=args.customers, n_terminals=2 * args.customers, n_days=args.days, seed=1))
    inputs = replay_features(frame)
    days = np.floor(frame["time"].to_numpy() / DAY)
    valid = days > days.max() - 7
    labels = frame["label"].to_numpy()
    train_rows, valid_rows = np.flatnonzero(~valid), np.flatnonzero(valid)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])

    rows = []
    for device in devices:
        config = replace(TrainConfig(), epochs=args.epochs, patience=args.epochs, device=device.type)
        artifact = fit(inputs[train_rows], labels[train_rows], inputs[valid_rows], labels[valid_rows], FEATURE_NAMES, config)
        per_epoch = artifact.params["seconds"] / artifact.params["epochs_run"]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # scoring as the worker does
        batch_ms = inference_ms(artifact, inputs[:BATCH], device, args.repeats)
        torch.set_num_threads(threads)
        rows.append((device.type, len(train_rows), per_epoch, batch_ms))
        if device.type == "cpu":
            summarised_s, summarising_s = serving_load_s(artifact, args.load_repeats)

    print(f"behaviour model {TrainConfig().hidden}, GRU summary {TrainConfig().summary_size}; "
          f"{len(frame):,} simulated transactions, {args.repeats} repeats")
    print(f"{'device':<8} {'training rows':>14} {'s per epoch':>12} {'ms per batch of 500':>20} {'µs per transaction':>19}")
    for name, n_train, per_epoch, batch_ms in rows:
        print(f"{name:<8} {n_train:>14,} {per_epoch:>12.2f} {batch_ms:>20.2f} {batch_ms * 1000 / BATCH:>19.1f}")
    print(f"\na worker's model load (registry and explainer, fresh process, median of {args.load_repeats}): "
          f"{summarised_s:.3f} s with the explainer's summary saved, {summarising_s:.3f} s summarising it at load")
    if len(rows) > 1:
        print(f"ratio CUDA/CPU: training {rows[1][2] / rows[0][2]:.3f}, inference {rows[1][3] / rows[0][3]:.3f}")
    else:
        print(f"ratio: inference is {rows[0][3] / 1000 * 100 / 0.5:.1f} % of a batch's time budget at 1,000 events/s "
              "(no CUDA device here: GPU not measured)")


if __name__ == "__main__":
    main()
