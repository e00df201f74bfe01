"""riskstream's own work per transaction, without Kafka or Faust: what the worker's stages cost beside the
messaging that any Faust agent pays for.

    python bench/pipeline_cost.py [--events 30000] [--repeats 3] [--data ../shared/data/handbook_raw.parquet]

The first ``--events`` handbook transactions (simulated ones when the file is absent), Avro-encoded as producers
send them, go through the functions the worker's agents call, in batches of the worker's size and in one
process: decode and validate, the card stage, the card states' changelog values (JSON), the by-terminal
messages encoded and read back, the terminal stage, the terminal states' changelog values, scoring with SHAP
reasons for the 1 % that alert, and encoding the decisions. Tables are plain dicts, the cycle collector and
torch run as in the worker (one thread), and the scoring runs inline rather than in the worker's scoring
thread. Each stage is timed per batch; the table gives microseconds per transaction, medians over repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
from faust.serializers import codecs as faust_codecs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explain import Explainer  # noqa: E402
from stream.codec import AvroCodec  # noqa: E402
from stream.pipeline import (  # noqa: E402
    Scorer, apply_card_stage, apply_terminal_stage, collect_cycles_less_often, decode_valid, terminal_event, terminal_of,
)
from stream.privacy import DEMO_KEY, Tokenizer  # noqa: E402
from stream.producer import replay_events  # noqa: E402
from stream.repartition import Repartition  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.validation import validate_transaction  # noqa: E402
from stream_harness import HANDBOOK, alert_threshold, load_transactions, train_model  # noqa: E402

TARGET_EVENTS_PER_S = 5_000


class WrittenTable(dict):
    """A dict table that remembers the keys written since :meth:`written` was last called: each is a changelog
    message in the worker."""

    def __init__(self) -> None:
        super().__init__()
        self._written: set[Any] = set()

    def __setitem__(self, key: Any, value: Any) -> None:
        self._written.add(key)
        super().__setitem__(key, value)

    def written(self) -> list[Any]:
        values, self._written = [self[key] for key in self._written], set()
        return values


class StageClock:
    """Seconds spent in each named stage, summed over batches."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - started


def run_once(raws: list[bytes], scorer: Scorer, settings: Settings) -> dict[str, float]:
    """One pass over the transactions, fresh states; seconds per stage."""
    transactions, decisions = AvroCodec("Transaction"), AvroCodec("Decision")
    to_terminals = Repartition("TerminalEventBatch", settings.partitions)
    cards, terminals = WrittenTable(), WrittenTable()
    label_delay_days = scorer.artifact.label_delay_days
    clock = StageClock()
    for start in range(0, len(raws), settings.batch_size):
        with clock.stage("decode and validate"):
            validate = partial(validate_transaction, now_ms=int(time.time() * 1000))
            records, _ = decode_valid(raws[start : start + settings.batch_size], transactions, validate)
        with clock.stage("card stage"):
            enriched = apply_card_stage(records, cards)
        with clock.stage("card states as changelog values"):
            [faust_codecs.dumps("json", state) for state in cards.written()]
        with clock.stage("by-terminal messages, encoded and read"):
            messages = to_terminals.messages(map(terminal_event, enriched), key=terminal_of)
            events, _ = to_terminals.read(value for _, value in messages)
        with clock.stage("terminal stage"):
            outcome = apply_terminal_stage(events, terminals, label_delay_days)
        with clock.stage("terminal states as changelog values"):
            [faust_codecs.dumps("json", state) for state in terminals.written()]
        with clock.stage("scoring, SHAP reasons for alerts"):
            batch = scorer.score(outcome.transactions, outcome.inputs)
        with clock.stage("decisions encoded"):
            [decisions.encode(decision) for decision in batch.decisions]
    return dict(clock.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=HANDBOOK)
    args = parser.parse_args()

    frame, source = load_transactions(args.data, args.events)
    settings = Settings()
    raws = [event.value for event in replay_events(frame, settings, label_delay_days=None)]
    with tempfile.TemporaryDirectory() as registry:
        artifact = train_model(Path(registry))
    scorer = Scorer(artifact, Explainer.for_artifact(artifact), threshold_logit=alert_threshold(artifact, frame),
                    tokenize=Tokenizer(DEMO_KEY))
    torch.set_num_threads(1)
    collect_cycles_less_often()  # as the worker runs
    runs = [run_once(raws, scorer, settings) for _ in range(args.repeats)]

    per_transaction = {name: statistics.median(run[name] for run in runs) / len(raws) * 1e6 for name in runs[0]}
    total = statistics.median(sum(run.values()) for run in runs) / len(raws) * 1e6
    print(f"\n{len(raws):,} {source} transactions, batches of {settings.batch_size}; median of {args.repeats} run(s)\n")
    print("| stage | µs per transaction |")
    print("|---|---|")
    for name, micros in per_transaction.items():
        print(f"| {name} | {micros:,.1f} |")
    print(f"| **all** | **{total:,.1f}** |")
    rate = 1e6 / total
    print(f"\nratio: riskstream's own work alone allows {rate:,.0f} events/s on one core, "
          f"{rate / TARGET_EVENTS_PER_S:.2f} of the {TARGET_EVENTS_PER_S:,} events/s target before any messaging")


if __name__ == "__main__":
    main()
