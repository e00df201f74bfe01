"""Worker faults during a replay: a worker killed with SIGKILL and restarted (``crash``), or a worker added and
another removed (``rebalance``), on two workers sharing 8-partition topics with the audit writer and one embedded
broker; checked against the offline replay that one uninterrupted worker matches (stream/drill.py).

``crash``: at 30 % of the decisions stored, worker 1 gets SIGKILL (nothing flushed, no leave: the group notices
after the session timeout); at 45 % it starts again and rejoins. ``rebalance``: at 30 % a third worker joins, at
60 % worker 0 leaves (SIGTERM). What must hold: every transaction has exactly one decision in the audit store,
every stored alert is a key on the alerts topic (re-sends with the same key allowed) and no key is unknown, every
card's state in the changelog equals an uninterrupted run's, and so do the card features. Re-sent decisions
(decision messages beyond one per transaction) show the at-least-once redelivery that the idempotent sinks
absorb. Scores may differ through terminal windows, counted in "scores differing": the replay runs at full
speed (or ``--rate`` events/s), and a partition stalled for tens of seconds falls days of event time behind.

    python bench/worker_faults.py crash [--customers 1500] [--days 35] [--rate 0]
    python bench/worker_faults.py rebalance [...]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import time
from pathlib import Path

from models.registry import save_artifact
from stream.drill import Reference, Step, check_run, local_overrides, replay, simulated
from stream.embedded import EmbeddedBroker
from stream.local import LocalServices

STEPS: dict[str, list[Step]] = {
    "crash": [(0.30, lambda services: services.kill_worker(1, signal.SIGKILL)),
              (0.45, lambda services: services.start_worker(1))],
    "rebalance": [(0.30, lambda services: services.start_worker()),
                  (0.60, lambda services: services.kill_worker(0, signal.SIGTERM))],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fault", choices=sorted(STEPS))
    parser.add_argument("--customers", type=int, default=1500)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--rate", type=float, default=0.0, help="events/s produced (0: as fast as possible)")
    args = parser.parse_args()

    frame, artifact = simulated(args.customers, args.days)
    reference = Reference.of(frame, artifact)
    print(f"{len(frame):,} transactions, {int(frame['label'].sum()):,} labels, {frame['card_id'].nunique():,} cards; "
          f"fault: {args.fault}")

    scratch = Path(tempfile.mkdtemp(prefix=f"riskstream-{args.fault}-"))
    with EmbeddedBroker() as broker:
        overrides = local_overrides(broker.url, scratch, args.fault)
        save_artifact(artifact, overrides["model_registry"])
        started = time.monotonic()
        try:
            with LocalServices(overrides, scratch / "logs", workers=2) as services:
                replay(services, frame, STEPS[args.fault], rate=args.rate or None, timeout_s=3600)
                check = check_run(services.settings, reference)
        except Exception:
            print(f"failed: the workers' and the writer's logs are kept in {scratch / 'logs'}")
            raise
        wall = time.monotonic() - started
    shutil.rmtree(scratch)

    print()
    print("| fault | transactions | decisions | missing | doubled | decision messages | alerts | alert messages | "
          "alerts lost | alerts unknown | card states differing | card features differing | terminal features differing | "
          "scores differing | scores differing with equal features | exact |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.fault} | {check.transactions:,} | {check.decisions:,} | {check.missing} | {check.doubled} | "
          f"{check.decision_messages:,} | {check.alerts} | {check.alert_messages} | {check.alerts_missing} | "
          f"{check.alerts_unknown} | {check.cards_differing} of {check.cards:,} | {check.card_features_differing} | "
          f"{check.terminal_features_differing:,} | {check.scores_differing:,} | {check.scores_unexplained} | {check.exact} |")
    print(f"ratio: decisions per transaction {check.decisions / check.transactions:.4f}, decision messages per transaction "
          f"{check.decision_messages / check.transactions:.3f} (re-sends absorbed by the store), "
          f"{check.events_per_s:,.0f} events/s from the first to the last decision, {wall:.0f} s in all")


if __name__ == "__main__":
    main()
