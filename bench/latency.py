"""Latency of one worker at a steady rate: produce time to decision and to explained alert, percentiles.

    python bench/latency.py [--rate 1000] [--seconds 60] [--data ../shared/data/handbook_raw.parquet]

An embedded broker, a worker and the audit writer as ``stream.local`` runs them (the model trained on
simulated weeks, its threshold set so that about 1 % of the replayed transactions alert). After a warm-up
(10 s of transactions at the same rate, until the worker has decided them), handbook transactions (simulated ones when the
file is absent) are produced one by one at ``--rate`` a second for ``--seconds``, each sent on its own.
Latency of a transaction: from the moment it was sent to

- ``decided_at``, the time the worker stamps on the decision when its batch is scored;
- the decision's message on the decisions topic (Kafka's timestamp: when the worker's producer took it);
- the alert's message on the alerts topic, sent after the batch's alerts are explained.

It also prints the CPU each process used while the steady transactions were sent (the broker, the worker, the
audit writer and this sender), in cores: where they share a small machine, a total near its core count means
the machine, not the worker alone, sets the latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stream.codec import AvroCodec  # noqa: E402
from stream.embedded import EmbeddedBroker  # noqa: E402
from stream.local import LocalServices  # noqa: E402
from stream.producer import transaction_record  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.topics import create_topics  # noqa: E402
from stream.drill import read_topic, terminal_events  # noqa: E402
from stream_harness import HANDBOOK, CpuClock, alert_threshold, load_transactions, train_model, wait_for_metric, worker_overrides  # noqa: E402

WARM_UP_SECONDS = 10.0
TARGETS_MS = {"decision": (10.0, 50.0), "alert": (None, 100.0)}


async def send_steadily(settings: Settings, records: list[dict], rate: float) -> dict[str, float]:
    """Send each record on its own at ``rate`` a second; returns each tx_id's send time (epoch ms).

    aiokafka, whose default partitioner is Kafka's, as kafka-python's is: at 1,000 sends a second kafka-python
    took 0.9 of a core of the two the worker, the broker and the audit writer share here, aiokafka 0.4.
    """
    codec = AvroCodec("Transaction")
    values = [(record["card_id"].encode(), codec.encode(record)) for record in records]
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks=1, linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    deliveries = []
    started = time.monotonic()
    try:
        for index, (key, value) in enumerate(values):
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[records[index]["tx_id"]] = time.time() * 1000.0
            deliveries.append(await producer.send(settings.transactions_topic, key=key, value=value))
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()
    return sent


def card_stage_median(settings: Settings, sent: dict[str, float]) -> float:
    """Median ms at which the steady transactions left the card stage, re-keyed by terminal (Kafka's timestamps)."""
    delays = [timestamp - sent[record["transaction"]["transaction"]["tx_id"]] for timestamp, record in terminal_events(settings)
              if record["transaction"] and record["transaction"]["transaction"]["tx_id"] in sent]
    return float(np.median(delays)) if delays else float("nan")


def percentiles(latencies: list[float]) -> tuple[float, float, float]:
    return tuple(float(value) for value in np.percentile(np.asarray(latencies), [50, 99, 100]))  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="transactions a second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--batch-within", type=float, default=None, help="RISKSTREAM_BATCH_WITHIN_S (default: the setting's default)")
    parser.add_argument("--linger", type=float, default=None, help="RISKSTREAM_PRODUCER_LINGER_S (default: the setting's default)")
    parser.add_argument("--fetch-wait", type=float, default=None, help="RISKSTREAM_FETCH_WAIT_S (default: the setting's default)")
    parser.add_argument("--data", type=Path, default=HANDBOOK)
    parser.add_argument("--workdir", type=Path, default=Path("var/bench/latency"), help="emptied first; logs stay there")
    args = parser.parse_args()

    steady = int(args.rate * args.seconds)
    warm_up = int(args.rate * WARM_UP_SECONDS)
    frame, source = load_transactions(args.data, warm_up + steady)
    records = [transaction_record(row) for row in frame.to_dict("records")]
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    with EmbeddedBroker() as broker:
        threshold_logit = alert_threshold(train_model(args.workdir / "models"), frame)
        tuning = {"batch_within_s": args.batch_within, "producer_linger_s": args.linger, "fetch_wait_s": args.fetch_wait}
        overrides = worker_overrides(broker, args.workdir, "bench-latency", threshold_logit=threshold_logit, **{k: v for k, v in tuning.items() if v is not None})
        services = LocalServices(overrides, args.workdir / "logs")
        settings = services.settings
        create_topics(settings)
        with services:
            services.wait_until_ready(300)
            asyncio.run(send_steadily(settings, records[:warm_up], rate=args.rate))
            wait_for_metric(settings.web_port, "riskstream_decisions_total", warm_up, 300, services.check_alive)
            pids = {"broker": broker.pid, "worker": services.worker_processes[0].pid, "audit writer": services.writer.pid, "sender": os.getpid()}
            clocks = {name: CpuClock(pid) for name, pid in pids.items()}
            started = time.monotonic()
            for clock in clocks.values():
                clock.sample()
            sent = asyncio.run(send_steadily(settings, records[warm_up:], rate=args.rate))
            for clock in clocks.values():
                clock.sample()
            elapsed = time.monotonic() - started
            achieved = steady / elapsed
            wait_for_metric(settings.web_port, "riskstream_decisions_total", warm_up + steady, 300, services.check_alive)
        decisions = AvroCodec("Decision")
        latencies: dict[str, list[float]] = {"decided_at": [], "decision": [], "alert": []}
        for message in read_topic(settings, settings.decisions_topic):
            tx_id = message.key.decode()
            if tx_id in sent:
                latencies["decided_at"].append(decisions.decode(message.value)["decided_at"] - sent[tx_id])
                latencies["decision"].append(message.timestamp - sent[tx_id])
        for message in read_topic(settings, settings.alerts_topic):
            if message.key.decode() in sent:
                latencies["alert"].append(message.timestamp - sent[message.key.decode()])
        card_stage_ms = card_stage_median(settings, sent)

    print(f"\n{steady:,} {source} transactions sent one by one at {achieved:,.0f}/s for {args.seconds:.0f} s "
          f"after a warm-up of {warm_up:,}; {len(latencies['alert']):,} alerts; batches wait at most "
          f"{settings.batch_within_s * 1000:g} ms, the producer lingers {settings.producer_linger_s * 1000:g} ms, "
          f"fetches wait at most {settings.fetch_wait_s * 1000:g} ms\n")
    print("| from send to | transactions | p50 ms | p99 ms | max ms | target p50 / p99 ms |")
    print("|---|---|---|---|---|---|")
    rows = (("decided_at (batch scored)", "decided_at", None), ("decision on its topic", "decision", "decision"),
            ("explained alert on its topic", "alert", "alert"))
    for label, key, target in rows:
        p50, p99, worst = percentiles(latencies[key]) if latencies[key] else (float("nan"),) * 3
        wanted = " / ".join("-" if value is None else f"{value:.0f}" for value in TARGETS_MS[target]) if target else ""
        print(f"| {label} | {len(latencies[key]):,} | {p50:.1f} | {p99:.1f} | {worst:.1f} | {wanted} |")
    cpu = {name: (clock.samples[-1][1] - clock.samples[0][1]) / elapsed for name, clock in clocks.items()}
    print(f"\nCPU while sending, in cores ({os.cpu_count()} here): "
          + ", ".join(f"{name} {share:.2f}" for name, share in cpu.items()) + f", together {sum(cpu.values()):.2f}")
    print(f"where the time goes, median ms from send: re-keyed by terminal (card stage) {card_stage_ms:.1f}, "
          f"decision {percentiles(latencies['decision'])[0]:.1f}")
    decision_p50, decision_p99, _ = percentiles(latencies["decision"])
    alert_p99 = percentiles(latencies["alert"])[1] if latencies["alert"] else float("nan")
    print(f"ratio to the targets: decision p50 {decision_p50 / 10:.2f}, decision p99 {decision_p99 / 50:.2f}, "
          f"alert p99 {alert_p99 / 100:.2f} (1.00 or less meets a target)")


if __name__ == "__main__":
    main()
