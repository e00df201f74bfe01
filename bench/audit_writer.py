"""How many decisions a second the audit writer stores: a poll's Avro messages in, DuckDB rows and segments out.

The messages are Confluent-framed ``Decision`` records as the consumer hands them over (29 features, 1 % alerts
with 5 reasons each, every tx_id new). Each run feeds them to a fresh store in polls of 5,000 through
``AuditWriter.add_decisions``, flushes every 20,000 as the writer does, and exports at the end; Kafka itself is
left out. The same messages go through the one-record-at-a-time decoding the writer used before, side by side.
Rates are per wall second and per CPU second of this process (DuckDB and polars use threads); medians of runs.

    python bench/audit_writer.py [--decisions 300000] [--runs 3] [--sequence]

``--sequence``: decisions also carry what the worker adds for retraining and replay (the card's 32-value
sequence, the batch id and row).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
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


def run(values: list[bytes], settings: Settings, add: Callable[[AuditWriter, AuditStore, list[bytes]], int]) -> tuple[float, float]:
    """(wall s, CPU s) to add, flush and export ``values`` into a fresh store."""
    writer = AuditWriter(settings)
    with tempfile.TemporaryDirectory() as root:
        store = AuditStore(root, export_interval_s=3600)
        wall, cpu = time.perf_counter(), time.process_time()
        buffered = 0
        for start in range(0, len(values), POLL):
            buffered += add(writer, store, values[start : start + POLL])
            if buffered >= MAX_BUFFERED:
                store.flush()
                buffered = 0
        store.close()  # the last flush and the export
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stored = AuditStore(root)
        assert stored._scalar("SELECT count(*) FROM decisions") == len(values), "every decision stored"
        stored.close()
    return wall, cpu


def one_by_one(writer: AuditWriter, store: AuditStore, values: list[bytes]) -> int:
    """The writer's previous path: fastavro decodes each message, the store converts the records."""
    records = [writer.decisions.codec.decode(value) for value in values]
    store.add_decisions(records)
    return len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sequence", action="store_true", help="decisions carry the card sequence and batch ids too")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as registry:
        settings = Settings(demo_mode=True, model_registry=Path(registry))
        values = messages(args.decisions, saved_model(Path(registry), rng), rng, args.sequence)
        paths = {"one read per poll (polars)": AuditWriter.add_decisions, "one record at a time (fastavro)": one_by_one}
        rates = {}
        for name, add in paths.items():
            run(values[:20_000], settings, add)  # warm-up: imports and first-call costs a long-running writer pays once
            timings = [run(values, settings, add) for _ in range(args.runs)]
            wall = statistics.median(t[0] for t in timings)
            cpu = statistics.median(t[1] for t in timings)
            rates[name] = (len(values) / wall, len(values) / cpu)
    print(f"{args.decisions:,} decisions{' with sequences' if args.sequence else ''}, median of {args.runs} runs\n")
    print("| writer path | decisions/s (wall) | decisions/s (per CPU second) |\n|---|---|---|")
    for name, (wall_rate, cpu_rate) in rates.items():
        print(f"| {name} | {wall_rate:,.0f} | {cpu_rate:,.0f} |")
    fast, slow = rates.values()
    print(f"\nratio: one read per poll is {fast[0] / slow[0]:.1f}x faster per wall second, {fast[1] / slow[1]:.1f}x per CPU second")


if __name__ == "__main__":
    main()
