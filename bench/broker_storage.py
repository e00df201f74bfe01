"""The embedded broker's speed with its data in memory (the default) and in a local S3 server (outage drills).

Each round starts a fresh broker of each kind, alternately: ``--messages`` 200-byte messages produced in
batches (acks=all) and read back, and 300 single messages each sent and waited for, as a worker's small
sends and commits are. Medians of ``--rounds``.

    python bench/broker_storage.py [--messages 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stream.embedded import EmbeddedBroker  # noqa: E402
from stream.object_store import LocalObjectStore  # noqa: E402

SINGLE_SENDS = 300


def one_round(store: LocalObjectStore | None, messages: int) -> tuple[float, float, float]:
    """Produced messages/s, milliseconds per waited-for single send, consumed messages/s."""
    with EmbeddedBroker(store=store) as broker:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic("bench", 4, 1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=20)
        started = time.perf_counter()
        for index in range(messages):
            producer.send("bench", key=str(index % 97).encode(), value=b"x" * 200)
        producer.flush()
        produced = messages / (time.perf_counter() - started)
        producer.close()
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0)
        started = time.perf_counter()
        for _ in range(SINGLE_SENDS):
            producer.send("bench", key=b"one", value=b"x").get(timeout=30)
        single_ms = (time.perf_counter() - started) / SINGLE_SENDS * 1000
        producer.close()
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=10_000)
        consumer.assign([TopicPartition("bench", partition) for partition in range(4)])
        started, read = time.perf_counter(), 0
        for _ in consumer:
            read += 1
            if read == messages + SINGLE_SENDS:
                break
        consumed = read / (time.perf_counter() - started)
        consumer.close()
    return produced, single_ms, consumed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, float]]] = {"memory": [], "S3 server": []}
    for _ in range(args.rounds):
        for kind in results:
            with LocalObjectStore() if kind == "S3 server" else nullcontext() as store:
                results[kind].append(one_round(store, args.messages))
    medians = {kind: [statistics.median(column) for column in zip(*rows)] for kind, rows in results.items()}
    print("| storage | produce msg/s (batched) | ms per single send | consume msg/s |")
    print("|---|---|---|---|")
    for kind, (produced, single_ms, consumed) in medians.items():
        print(f"| {kind} | {produced:,.0f} | {single_ms:.1f} | {consumed:,.0f} |")
    memory, s3 = medians["memory"], medians["S3 server"]
    print(f"S3 server / memory: produce {s3[0] / memory[0]:.2f}, single send {s3[1] / memory[1]:.1f}x the time, consume {s3[2] / memory[2]:.2f}")


if __name__ == "__main__":
    main()
