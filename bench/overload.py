"""Overload: transactions arrive at three times what one worker can score, for a minute; does it hold?

First the worker's capacity is measured (a backlog of ``--warm`` transactions, scored flat out: decisions
stored per second, end to end). Then transactions are produced at ``--factor`` times that rate for
``--seconds``, and every second the backlog (transactions sent less decisions stored), the consumer lag the
worker reports on its ``/metrics`` page, its resident memory and the decisions stored are sampled until every
transaction has its decision. Back-pressure is Faust's: a full stream buffer pauses fetching, so the backlog
waits in Kafka, not in the worker's memory. The embedded broker's end offsets are unreliable after batched
produce (see the README), so the reported lag is shown but the backlog is the measure. Linux only (RSS from
/proc). Transactions only, no labels; the broker, producer and services share the machine.

    python bench/overload.py [--customers 2000] [--days 60] [--factor 3] [--seconds 60] [--samples overload.csv]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit import query  # noqa: E402
from models.registry import save_artifact  # noqa: E402
from services import rss_mib, worker_lag  # noqa: E402
from stream.drill import simulated  # noqa: E402
from stream.embedded import EmbeddedBroker  # noqa: E402
from stream.local import LocalServices, isolated_overrides  # noqa: E402
from stream.producer import Event, produce, replay_events  # noqa: E402
from stream.topics import create_topics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--warm", type=int, default=15_000, help="transactions of the capacity measurement")
    parser.add_argument("--factor", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="longest wait for the catch-up")
    parser.add_argument("--samples", type=Path, default=None, help="write the per-second samples here (CSV)")
    args = parser.parse_args()

    frame, artifact = simulated(args.customers, args.days, seed=5, train_days=10)
    workdir = Path(tempfile.mkdtemp(prefix="overload-"))
    registry = workdir / "models"
    save_artifact(artifact, registry)
    warm, rest = frame.iloc[: args.warm], frame.iloc[args.warm :]
    with EmbeddedBroker() as broker, LocalServices(isolated_overrides("overload", broker.url, workdir, model_registry=registry), workdir / "logs") as services:
        settings = services.settings
        worker = services.processes[-1].pid
        create_topics(settings)
        # capacity: a backlog scored flat out, timed from the first stored decision to the last
        produce(replay_events(warm, settings, None), settings, progress=False)
        services.wait_for_decisions(1, timeout_s=300)
        started = time.monotonic()
        services.wait_for_decisions(len(warm), timeout_s=args.timeout)
        capacity = (len(warm) - 1) / (time.monotonic() - started)

        rate = args.factor * capacity
        burst = rest.iloc[: int(rate * args.seconds)]
        if len(burst) < int(rate * args.seconds):
            raise SystemExit(f"only {len(burst):,} transactions left for {int(rate * args.seconds):,}: raise --days or --customers")
        expected = len(warm) + len(burst)
        produced: dict[str, float] = {"sent": 0}

        def counted(events: Iterator[Event]) -> Iterator[Event]:
            for event in events:
                produced["sent"] += 1
                yield event

        def send() -> None:
            began = time.monotonic()
            produce(counted(replay_events(burst, settings, None)), settings, rate=rate, progress=False)
            produced["seconds"] = time.monotonic() - began
            produced["at"] = time.monotonic()

        producer = threading.Thread(target=send, daemon=True)
        t0 = time.monotonic()
        producer.start()
        samples = []
        while True:
            services.check_alive()
            stored = services.decisions_stored()
            samples.append({"t_s": round(time.monotonic() - t0, 1), "backlog": len(warm) + produced["sent"] - stored,
                            "lag": worker_lag(settings.web_port),
                            "rss_mib": round(rss_mib(worker), 1), "stored": stored})
            if stored >= expected or time.monotonic() - t0 > args.timeout:
                break
            time.sleep(1.0)
        producer.join()
        done = time.monotonic()
    rows = query(settings.audit_dir, "SELECT count(*) AS rows, count(DISTINCT tx_id) AS ids FROM decisions").to_pylist()[0]

    if args.samples:
        with args.samples.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(samples[0]))
            writer.writeheader()
            writer.writerows(samples)
    lags = [sample["lag"] for sample in samples if sample["lag"] == sample["lag"]] or [float("nan")]
    peak = max(samples, key=lambda sample: sample["backlog"])
    rss = [sample["rss_mib"] for sample in samples]
    print("| capacity (decisions/s) | target rate | produced rate | peak backlog (at s) | reported lag, peak | "
          "RSS start / peak / end MiB | catch-up after producing | stored / distinct / expected |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {capacity:,.0f} | {rate:,.0f}/s for {args.seconds:.0f} s | {len(burst) / produced['seconds']:,.0f}/s ({produced['seconds']:.0f} s) "
          f"| {peak['backlog']:,} ({peak['t_s']:.0f}) | {max(lags):,.0f} | {rss[0]:.0f} / {max(rss):.0f} / {rss[-1]:.0f} "
          f"| {done - produced['at']:.0f} s | {rows['rows']:,} / {rows['ids']:,} / {expected:,} |")
    print(f"produced/capacity ratio: {len(burst) / produced['seconds'] / capacity:.2f}")


if __name__ == "__main__":
    main()
