"""How many decisions a second the audit writer stores: a poll's Avro messages in, DuckDB rows and segments out.

The messages are Confluent-framed ``Decision`` records as the consumer hands them over (29 features, 1 % alerts
with 5 reasons each, every tx_id new). Each run feeds them to a fresh store in polls of 5,000 through
``AuditWriter.add_decisions``, flushes every 20,000 and exports every ``audit_export_interval_s`` (10 s) as the
writer does, and closes the store (the last flush, export and checkpoint); Kafka itself is left out. Two ways
side by side: pipelined, as the writer runs (each flush on the store's thread while the next polls are
decoded, each export on a thread of its own), and in turn (decode, insert, export one after the other on one
thread, as the writer did before). Rates are per wall second and per CPU second of this process (all its
threads); medians of runs. A million decisions take about 20 s, long enough for the exports to overlap.

    python bench/audit_writer.py [--decisions 1000000] [--runs 3] [--sequence]

``--sequence``: decisions also carry what the worker adds for retraining and replay (the card's 32-value
sequence, the batch id and row).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from audit import AuditStore
from models.features import FEATURE_NAMES
from models.network import BehaviourModel, ModelArtifact, ModelInputs, new_version
from models.reference import reference_profile
from models.registry import save_artifact
from stream.audit_writer import MAX_BUFFERED, AuditWriter
from stream.codec import AvroCodec
from stream.settings import Settings

POLL = 5000
T0 = 1_767_225_600_000


def saved_model(registry: Path, rng: np.random.Generator) -> str:
    network = BehaviourModel(len(FEATURE_NAMES), (8,), sequence_dim=4, summary_size=4)
    version = new_version(network, datetime(2026, 1, 1, tzinfo=timezone.utc))
    x = rng.gamma(2.0, 10.0, (5000, len(FEATURE_NAMES)))
    reference = reference_profile(x, rng.beta(1, 30, 5000), FEATURE_NAMES)
    save_artifact(ModelArtifact(version, FEATURE_NAMES, network, np.zeros(len(FEATURE_NAMES)), np.ones(len(FEATURE_NAMES)),
                                ModelInputs(x[:4], np.zeros((4, 8, 4))), 0.5, 7.0, reference=reference), registry)
    return version


def messages(count: int, version: str, rng: np.random.Generator, sequence: bool = False) -> list[bytes]:
    """``count`` encoded decisions: 1,000 encoded templates, each message with its own fixed-width tx_id."""
    codec = AvroCodec("Decision")
    templates = []
    for i in range(1000):
        alert = i % 100 == 0
        reasons = [{"feature": name, "label": f"{name} is high", "value": 3.0, "contribution": 0.5 - k / 10}
                   for k, name in enumerate(FEATURE_NAMES[:5])] if alert else []
        record = {
            "tx_id": "tx-000000000000", "event_time": T0 + i * 1000, "card_id": f"{i:032x}", "terminal_id": f"term-{i}",
            "amount": float(rng.gamma(2, 30)), "score": 0.9 if alert else float(rng.beta(1, 30)), "score_logit": -3.0,
            "threshold": 0.5, "is_alert": alert, "model_version": version, "decided_at": T0 + i * 1000 + 40,
            "features": [float(v) for v in np.round(rng.gamma(2.0, 10.0, len(FEATURE_NAMES)), 2)],
            "base_value": -4.0 if alert else None, "additivity_gap": 1e-7 if alert else None, "reasons": reasons,
        }
        if sequence:
            record |= {"sequence": rng.normal(size=32).astype(np.float32).tolist(), "batch_id": i // 50, "batch_row": i % 50}
        encoded = codec.encode(record)
        templates.append((encoded[:6], encoded[6 + 15 :]))  # header + length byte | tx_id (15 bytes) | the rest
    return [head + f"tx-{n:012d}".encode() + tail for n, (head, tail) in zip(range(count), templates * (count // 1000 + 1))]


def run(values: list[bytes], settings: Settings, pipelined: bool) -> tuple[float, float]:
    """(wall s, CPU s) to add, flush and export ``values`` into a fresh store."""
    writer = AuditWriter(settings)
    with tempfile.TemporaryDirectory() as root:
        store = AuditStore(root, export_interval_s=settings.audit_export_interval_s, export_in_background=pipelined)
        flush = store.flush_in_background if pipelined else store.flush
        wall, cpu = time.perf_counter(), time.process_time()
        buffered = 0
        for start in range(0, len(values), POLL):
            buffered += writer.add_decisions(store, values[start : start + POLL])
            if buffered >= MAX_BUFFERED:
                flush()
                buffered = 0
        store.close()  # the last flush, export and checkpoint
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stored = AuditStore(root)
        assert stored._scalar("SELECT count(*) FROM decisions") == len(values), "every decision stored"
        stored.close()
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sequence", action="store_true", help="decisions carry the card sequence and batch ids too")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as registry:
        settings = Settings(demo_mode=True, model_registry=Path(registry))
        values = messages(args.decisions, saved_model(Path(registry), rng), rng, args.sequence)
        paths = {"pipelined (the writer)": True, "in turn": False}
        timings: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        run(values[:20_000], settings, True)  # warm-up: imports and first-call costs a long-running writer pays once
        for _ in range(args.runs):
            for name, pipelined in paths.items():  # alternating, so that both see the same machine
                timings[name].append(run(values, settings, pipelined))
        rates = {}
        for name, runs in timings.items():
            wall, cpu = statistics.median(t[0] for t in runs), statistics.median(t[1] for t in runs)
            rates[name] = (len(values) / wall, len(values) / cpu)
    print(f"{args.decisions:,} decisions{' with sequences' if args.sequence else ''}, median of {args.runs} runs\n")
    print("| writer path | decisions/s (wall) | decisions/s (per CPU second) |\n|---|---|---|")
    for name, (wall_rate, cpu_rate) in rates.items():
        print(f"| {name} | {wall_rate:,.0f} | {cpu_rate:,.0f} |")
    fast, slow = rates.values()
    print(f"\nratio: pipelined stores {fast[0] / slow[0]:.2f}x as many decisions per wall second as in turn, "
          f"{fast[1] / slow[1]:.2f}x per CPU second; target 50,000 per wall second")


if __name__ == "__main__":
    main()
