"""Broker outage: stop the broker for ``--outage`` seconds mid-stream, start it again, and see what follows.

A worker and the audit writer score and store the first half of the stream; the broker is stopped
(SIGTERM) and started again on the same port; the topics are re-created and the second half is produced.
The embedded broker is memory-only: it comes back empty (no topics, committed offsets or changelogs).
What this measures is the services' side: do they stay up and reconnect by themselves, how long until
decisions flow again, and how many of the transactions produced after the restart get exactly one decision.

    python bench/broker_outage.py [--outage 30] [--customers 500] [--days 14]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit import query  # noqa: E402
from models.registry import save_artifact  # noqa: E402
from stream.drill import simulated  # noqa: E402
from stream.embedded import EmbeddedBroker, free_port  # noqa: E402
from stream.local import LocalServices, isolated_overrides  # noqa: E402
from stream.producer import produce, replay_events  # noqa: E402
from stream.topics import create_topics  # noqa: E402

DAY = 86_400


def settle(services: LocalServices, expected: int, timeout_s: float, quiet_s: float = 30.0) -> None:
    """Wait until ``expected`` decisions are stored, or none has been added for ``quiet_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    seen, changed = -1, time.monotonic()
    while time.monotonic() < deadline and seen < expected and time.monotonic() - changed < quiet_s:
        services.check_alive()
        now = services.decisions_stored()
        if now != seen:
            seen, changed = now, time.monotonic()
        time.sleep(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the broker stays down")
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--days", type=int, default=14, help="simulated days: the first 10 train the model")
    parser.add_argument("--wait", type=float, default=300.0, help="longest wait for the decisions after the restart")
    args = parser.parse_args()

    frame, artifact = simulated(args.customers, args.days, seed=5, train_days=10)
    workdir = Path(tempfile.mkdtemp(prefix="outage-"))
    registry = workdir / "models"
    save_artifact(artifact, registry)
    start = frame["time"].min()
    middle = start + (args.days / 2) * DAY
    before, after = frame[frame["time"] < middle], frame[frame["time"] >= middle]
    port = free_port()
    broker = EmbeddedBroker(port).start()
    try:
        with LocalServices(isolated_overrides("outage", broker.url, workdir, model_registry=registry), workdir / "logs") as services:
            settings = services.settings
            create_topics(settings)
            produce(replay_events(before, settings, None), settings, progress=False)
            services.wait_for_decisions(len(before), timeout_s=args.wait)
            stored_before = services.decisions_stored()
            broker.stop()
            stopped = time.monotonic()
            time.sleep(args.outage)
            services.check_alive()
            alive_after_outage = True
            broker = EmbeddedBroker(port).start()
            restarted = time.monotonic()
            create_topics(settings)
            produce(replay_events(after, settings, None), settings, progress=False)
            first_new = services.wait_for_decisions(stored_before + 1, timeout_s=args.wait)
            resumed = time.monotonic() - restarted if first_new > stored_before else float("nan")
            settle(services, stored_before + len(after), args.wait)
            services.check_alive()
            stored = services.decisions_stored()
    finally:
        broker.stop()
    after_ids = set(after["tx_id"].astype(str))
    per_tx = query(settings.audit_dir, "SELECT tx_id, count(*) AS n FROM decisions GROUP BY tx_id").to_pandas()
    decided_after = int(per_tx["tx_id"].isin(after_ids).sum())
    print("| outage | services alive after | decisions before | produced after restart | decided (exactly once) | first new decision after restart | duplicates |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.outage:.0f} s (down {restarted - stopped:.0f} s) | {'yes' if alive_after_outage else 'no'} | {stored_before:,} / {len(before):,} "
          f"| {len(after):,} | {decided_after:,} | {resumed:.1f} s | {int((per_tx['n'] > 1).sum())} |")
    print(f"decided/produced after the restart: {decided_after / len(after):.3f} (stored in all: {stored:,})")


if __name__ == "__main__":
    main()
