"""Broker outage: stop the broker for ``--outage`` seconds mid-stream, start it again, and count the decisions.

A worker and the audit writer score and store the first half of the stream; while they are still at it (a
third of it stored) the broker is stopped (SIGTERM), and after ``--outage`` seconds started again on the same
port and the same storage: a local S3 server (stream.object_store) that stays up meanwhile, as a Kafka
broker keeps its disk, so topics, messages and committed offsets survive. Then the second half is produced.
Nobody touches the services. Reported: whether they stayed up, how long until decisions flowed again, and
whether every transaction of both halves got exactly one decision.

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
from stream.object_store import LocalObjectStore  # noqa: E402
from stream.producer import produce, replay_events  # noqa: E402
from stream.topics import create_topics  # noqa: E402

DAY = 86_400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the broker stays down")
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--days", type=int, default=14, help="simulated days: the first 10 train the model")
    parser.add_argument("--wait", type=float, default=600.0, help="longest wait for the decisions of each half")
    args = parser.parse_args()

    frame, artifact = simulated(args.customers, args.days, seed=5, train_days=10)
    workdir = Path(tempfile.mkdtemp(prefix="outage-"))
    registry = workdir / "models"
    save_artifact(artifact, registry)
    middle = frame["time"].min() + (args.days / 2) * DAY
    before, after = frame[frame["time"] < middle], frame[frame["time"] >= middle]
    total = len(before) + len(after)
    port = free_port()
    with LocalObjectStore() as store:
        broker = EmbeddedBroker(port, store=store).start()
        try:
            with LocalServices(isolated_overrides("outage", broker.url, workdir, model_registry=registry), workdir / "logs") as services:
                settings = services.settings
                create_topics(settings)
                produce(replay_events(before, settings, None), settings, progress=False)
                stored_at_stop = services.wait_for_decisions(len(before) // 3, timeout_s=args.wait)
                broker.stop()
                stopped = time.monotonic()
                time.sleep(args.outage)
                services.check_alive()
                broker = EmbeddedBroker(port, store=store).start()
                restarted = time.monotonic()
                produce(replay_events(after, settings, None), settings, progress=False)
                first_new = services.wait_for_decisions(stored_at_stop + 1, timeout_s=args.wait)
                resumed = time.monotonic() - restarted if first_new > stored_at_stop else float("nan")
                services.wait_for_decisions(total, timeout_s=args.wait)
                all_in = time.monotonic() - restarted
                time.sleep(5)  # a late second copy would show by now
                services.check_alive()
                stored = services.decisions_stored()
        finally:
            broker.stop()
    per_tx = query(settings.audit_dir, "SELECT tx_id, count(*) AS n FROM decisions GROUP BY tx_id").to_pandas()
    decided = set(per_tx["tx_id"])
    missing = {half: len(set(part["tx_id"].astype(str)) - decided) for half, part in (("before", before), ("after", after))}
    print("| outage | services alive after | stored when stopped | produced before / after | decided exactly once | missing before / after | duplicates | first new decision after restart | all decided after restart |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.outage:.0f} s (down {restarted - stopped:.0f} s) | yes | {stored_at_stop:,} | {len(before):,} / {len(after):,} "
          f"| {int((per_tx['n'] == 1).sum()):,} | {missing['before']} / {missing['after']} | {int((per_tx['n'] > 1).sum())} "
          f"| {resumed:.1f} s | {all_in:.1f} s |")
    print(f"decided exactly once / produced: {int((per_tx['n'] == 1).sum()) / total:.4f} (stored rows {stored:,}, expected {total:,})")


if __name__ == "__main__":
    main()
