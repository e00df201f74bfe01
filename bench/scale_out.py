"""Scale-out: one, two and four workers on the same 8-partition topics, each with the audit writer, all on this
machine and one embedded broker; then the state memory per card.

For each worker count the same simulated transactions (each fraud followed by its label, reported a label delay
later) are produced once every worker is ready, at full speed, and the run is checked against the offline replay
that one uninterrupted worker matches (stream/drill.py): one decision per transaction, alerts, every card's
changelogged state and card features.
Events/s counts transactions from the first to the last decision. On a machine with fewer cores than workers the
ideal is flat: the point is that the totals stay exact and the rate does not collapse.

Scores: a replay at full speed compresses days of event time into seconds, so partitions that progress at
different rates drift apart by more than the label delay, and a terminal may see an old transaction after a
newer one; "scores differing" counts what that changed (live traffic does not drift days). "Overtaken" counts
the transactions that this can change: those whose terminal received, after them, a transaction more than the
label delay older and within their longest window, or a fraud label reported before them for a transaction that
old (read back from ``<app>-by-terminal`` in arrival order).

State memory per card: the card table's values as the changelog holds them (JSON bytes per card) and as a worker
holds them in its memory store (the decoded Python objects, measured with tracemalloc: a worker's RSS also
holds torch, Faust and buffers, and moves by more than a table of this size between two readings).

    python bench/scale_out.py [--customers 500] [--days 21] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import tracemalloc
from pathlib import Path

from models.features import DAY, WINDOWS_DAYS
from models.registry import save_artifact
from stream.drill import Reference, RunCheck, check_run, local_overrides, read_topic, replay, simulated, terminal_events
from stream.embedded import EmbeddedBroker
from stream.local import LocalServices
from stream.settings import Settings


def memory_per_card(settings: Settings) -> tuple[int, float, float]:
    """(cards, changelog JSON bytes, tracemalloc bytes) per card of the card-state table."""
    latest = {message.key: message.value for message in read_topic(settings, f"{settings.app_id}-card-state-changelog")}
    cards = len(latest)
    serialised = sum(len(value) for value in latest.values()) / cards
    tracemalloc.start()
    table = {key: json.loads(value) for key, value in latest.items()}  # what the worker's memory store holds
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(table) == cards
    return cards, serialised, held / cards


def overtaken(settings: Settings, label_delay_days: float) -> tuple[int, int]:
    """Transactions whose terminal received, after them, something their terminal features read: a transaction
    more than ``label_delay_days`` older and within their longest window, or a fraud label reported before them
    for a transaction that old. Counted apart, in that order (a transaction overtaken by both counts in each)."""
    arrived: dict[str, list[tuple[float, str]]] = {}  # each terminal's transactions (day, tx_id), in arrival order
    day_of: dict[str, float] = {}
    by_transaction: set[str] = set()
    by_label: set[str] = set()
    for _, record in terminal_events(settings):
        if record["transaction"]:
            transaction = record["transaction"]["transaction"]
            terminal, day = transaction["terminal_id"], transaction["event_time"] / 1000 / DAY
            day_of[transaction["tx_id"]] = day
            by_transaction.update(tx_id for earlier, tx_id in arrived.get(terminal, [])
                                  if earlier - label_delay_days - max(WINDOWS_DAYS) <= day < earlier - label_delay_days)
            arrived.setdefault(terminal, []).append((day, transaction["tx_id"]))
        elif record["feedback"]["is_fraud"] and record["feedback"]["tx_id"] in day_of:
            label, day = record["feedback"], day_of[record["feedback"]["tx_id"]]
            reported = label["reported_at"] / 1000 / DAY
            by_label.update(tx_id for earlier, tx_id in arrived.get(label["terminal_id"], [])
                            if reported <= earlier and day < earlier - label_delay_days)
    return len(by_transaction), len(by_label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()

    frame, artifact = simulated(args.customers, args.days)
    reference = Reference.of(frame, artifact)
    print(f"{len(frame):,} transactions, {int(frame['label'].sum()):,} labels, {frame['card_id'].nunique():,} cards, "
          f"{args.partitions} partitions")

    checks: dict[int, RunCheck] = {}
    late: dict[int, tuple[int, int]] = {}
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as scratch:
        for workers in args.workers:
            root = Path(scratch) / f"workers-{workers}"
            overrides = local_overrides(broker.url, root, f"scale{workers}", partitions=args.partitions)
            save_artifact(artifact, overrides["model_registry"])
            with LocalServices(overrides, root / "logs", workers=workers) as services:
                replay(services, frame, timeout_s=3600)
                checks[workers] = check_run(services.settings, reference)
                late[workers] = overtaken(services.settings, artifact.label_delay_days)
                if workers == args.workers[0]:
                    memory = memory_per_card(services.settings)
            print(f"  {workers} worker(s): {checks[workers]}", flush=True)

    print()
    print("| workers | events/s | decisions | missing | doubled | decision messages | card states differing | "
          "card features differing | overtaken by a transaction / a label | terminal features differing | scores differing | alerts (on topic: messages) | exact |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for workers, check in checks.items():
        print(f"| {workers} | {check.events_per_s:,.0f} | {check.decisions:,} | {check.missing} | {check.doubled} | "
              f"{check.decision_messages:,} | {check.cards_differing} of {check.cards:,} | {check.card_features_differing} | "
              f"{' / '.join(map(str, late[workers]))} | {check.terminal_features_differing} | {check.scores_differing} | {check.alerts} ({check.alert_messages}) | "
              f"{check.exact} |")
    cards, serialised, held = memory
    print(f"\nstate memory per card ({cards:,} cards, {len(frame) / cards:.0f} transactions each): "
          f"{serialised:,.0f} B in the changelog (JSON), {held:,.0f} B as Python objects in a worker's memory "
          f"store (tracemalloc)")
    base = checks[args.workers[0]].events_per_s
    print("ratio: " + ", ".join(f"{workers} / {args.workers[0]} workers events/s = {check.events_per_s / base:.2f}"
                                for workers, check in checks.items() if workers != args.workers[0]))


if __name__ == "__main__":
    main()
