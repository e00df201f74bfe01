"""One worker's throughput with everything on, against Faust's own ceiling measured in the same run.

    python bench/worker_throughput.py [--events 100000] [--repeats 1] [--data ../shared/data/handbook_raw.parquet]

An embedded broker; the transactions topic (8 partitions) pre-loaded with the first ``--events`` handbook
transactions (simulated ones when the file is absent), keyed by card as producers key them. Then, in turn
and on the same topic:

- a Faust worker whose one agent only counts (``bench/counting_agent.py``): events/s from its first event to
  its last;
- the riskstream worker (``faust -A stream.app worker``: ingest and card stage, terminal stage with the
  model and SHAP reasons on alerts, decisions and alerts sent) beside the audit writer, as ``stream.local``
  runs them: events/s from its first transaction re-keyed by terminal to the last decision on the decisions
  topic (Kafka's message timestamps), and a check that every transaction has a decision in the audit store.
  No stage takes an event before the model is loaded, so the loading is outside that span and all the
  stages' work inside it.

The model is trained on simulated weeks first (seconds), its threshold set so that about 1 % of the
transactions alert. Medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stream.embedded import EmbeddedBroker  # noqa: E402
from stream.local import LocalServices  # noqa: E402
from stream.producer import produce, replay_events  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.topics import create_topics  # noqa: E402
from stream.drill import read_topic  # noqa: E402
from stream_harness import HANDBOOK, CpuClock, alert_threshold, load_transactions, train_model, wait_for_metric, worker_overrides  # noqa: E402

TIMEOUT_S = 600.0


def counting_rate(settings: Settings, expected: int, workdir: Path, run: int) -> tuple[float, float]:
    """Events/s of the do-nothing counting agent over the pre-loaded transactions, per wall and per CPU second."""
    out = workdir / f"count-{run}.json"
    env = os.environ | {
        "COUNT_BROKER_URL": settings.broker_url,
        "COUNT_TOPIC": settings.transactions_topic,
        "COUNT_EXPECTED": str(expected),
        "COUNT_OUT": str(out),
        "COUNT_APP_ID": f"bench-count-{run}",
        "COUNT_DATA_DIR": str(workdir / f"count-{run}"),
    }
    script = Path(__file__).with_name("counting_agent.py")
    with (workdir / f"count-{run}.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, str(script), "worker", "-l", "warn"], env=env, stdout=log, stderr=subprocess.STDOUT)
    clock = CpuClock(process.pid)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not out.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the counting agent stopped or stalled; see {workdir}/count-{run}.log")
            clock.sample()
            time.sleep(0.2)
        clock.sample()
    finally:
        process.terminate()
        process.wait(timeout=30)
    result = json.loads(out.read_text())
    return result["count"] / (result["last"] - result["first"]), result["count"] / clock.between(result["first"], result["last"])


def worker_rate(broker: EmbeddedBroker, transactions_topic: str, threshold_logit: float, expected: int, workdir: Path, run: int) -> dict:
    """Events/s of the riskstream worker, first transaction in to last decision out, and what it produced."""
    overrides = worker_overrides(broker, workdir, f"bench-worker-{run}", transactions_topic=transactions_topic, threshold_logit=threshold_logit)
    services = LocalServices(overrides, workdir / f"logs-{run}")
    settings = services.settings
    create_topics(settings)
    with services:
        clock = CpuClock(services.worker_processes[0].pid)

        def alive() -> None:
            services.check_alive()
            clock.sample()

        decided = int(wait_for_metric(settings.web_port, "riskstream_decisions_total", expected, TIMEOUT_S, alive))
        clock.sample()
        stored = services.wait_for_decisions(expected, timeout_s=120)
    decisions = read_topic(settings, settings.decisions_topic)
    first_in = min(message.timestamp for message in read_topic(settings, f"{settings.app_id}-by-terminal"))
    last_out = max(message.timestamp for message in decisions)
    return {
        "rate": expected / ((last_out - first_in) / 1000.0),
        "cpu_rate": expected / clock.between(first_in / 1000.0, last_out / 1000.0),
        "decided": decided,
        "distinct": len({message.key for message in decisions}),
        "stored": stored,
        "alerts": len(read_topic(settings, settings.alerts_topic)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--data", type=Path, default=HANDBOOK)
    parser.add_argument("--workdir", type=Path, default=Path("var/bench/worker"), help="emptied first; logs stay there")
    args = parser.parse_args()

    frame, source = load_transactions(args.data, args.events)
    workdir = args.workdir
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    with EmbeddedBroker() as broker:
        threshold_logit = alert_threshold(train_model(workdir / "models"), frame)
        load = Settings(**worker_overrides(broker, workdir, "bench-load"))
        create_topics(load)
        produce(replay_events(frame, load, label_delay_days=None), load, total=len(frame), progress=False)
        counts, workers = [], []
        for run in range(args.repeats):
            counts.append(counting_rate(load, len(frame), workdir, run))
            workers.append(worker_rate(broker, load.transactions_topic, threshold_logit, len(frame), workdir, run))
            print(f"run {run + 1}: counting agent {counts[-1][0]:,.0f} events/s, worker {workers[-1]['rate']:,.0f} events/s", file=sys.stderr)

    count, count_cpu = (statistics.median(values) for values in zip(*counts))
    worker = statistics.median(result["rate"] for result in workers)
    worker_cpu = statistics.median(result["cpu_rate"] for result in workers)
    last = workers[-1]
    print(f"\n{len(frame):,} {source} transactions pre-loaded on 8 partitions; median of {args.repeats} run(s); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end\n")
    print("| worker | events/s | events per CPU second | target |")
    print("|---|---|---|---|")
    print(f"| do-nothing Faust agent (only counts) | {count:,.0f} | {count_cpu:,.0f} | |")
    print(f"| riskstream worker, everything on | {worker:,.0f} | {worker_cpu:,.0f} | >= 5,000 events/s |")
    print(f"\n(last run: {last['decided']:,} decisions counted by the worker, {last['distinct']:,} distinct transactions, "
          f"{last['stored']:,} in the audit store, {last['alerts']:,} explained alerts)")
    print(f"ratio: the worker runs at {worker / count:.2f} of the counting agent's events/s, {worker_cpu / count_cpu:.2f} "
          f"per CPU second (target >= 0.60)")


if __name__ == "__main__":
    main()
