"""Drills on local processes: replay transactions through N workers while workers join, leave or crash, then
check what the run left behind against the offline replay of the same transactions.

What must hold however the partitions moved: every transaction has exactly one decision in the audit store,
with the score one uninterrupted worker gives; every alert in the store reached the alerts topic (a re-send
with the same key is allowed, consumers dedupe by key); and each card's state, read back from the card
table's changelog, equals the state an uninterrupted run leaves. The scale-out and fault benchmarks (bench/)
run these drills at full size, the tests at a small one.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from audit import query
from models.dataset import normalize
from models.features import FEATURE_NAMES
from models.network import ModelArtifact
from models.replay import replay_card_states, replay_features
from models.simulate import simulate
from models.train import TrainConfig, train_from_frame
from stream.local import LocalServices, isolated_overrides
from stream.producer import produce, replay_events
from stream.repartition import Repartition
from stream.security import kafka_python_options
from stream.settings import Settings
from stream.topics import create_topics

#: An action on the running services (kill a worker, add one...) at a fraction of the decisions stored.
Step = tuple[float, Callable[[LocalServices], None]]


def local_overrides(broker_url: str, root: Path, app_id: str, partitions: int = 8) -> dict[str, Any]:
    """Settings of a drill on the embedded broker: its own topics and folders under ``root``, short group timeouts
    so that a crashed worker's partitions move within seconds, the demo card-token key."""
    # The embedded broker reports a partition's end offset as its last batch's first offset + 1, while a fetch
    # returns the whole batch: a worker can hold a table offset past that "end", which Faust's check takes
    # for lost data and stops the worker. Recovery itself applies all it reads (stream/recovery.py).
    return isolated_overrides(app_id, broker_url, root, partitions=partitions, model_registry=root / "models",
                              recovery_consistency_check=False)


def read_topic(settings: Settings, topic: str, idle_s: float = 2.0, first_s: float = 30.0) -> list[ConsumerRecord]:
    """Every message of ``topic``, from the start until nothing new arrived for ``idle_s`` (or nothing at all in
    ``first_s``).

    Ends on silence rather than on the partitions' end offsets, which the embedded broker reports too low.
    """
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False, group_id=None,
                             **kafka_python_options(settings))
    try:
        partitions = [TopicPartition(topic, partition) for partition in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        messages: list[ConsumerRecord] = []
        last_news = time.monotonic()
        while time.monotonic() - last_news < (idle_s if messages else first_s):
            for batch in consumer.poll(timeout_ms=200).values():
                messages.extend(batch)
                last_news = time.monotonic()
        return messages
    finally:
        consumer.close()


def terminal_events(settings: Settings) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every terminal event the worker's stages sent each other (``<app>-by-terminal``), decoded, in each
    partition's order, with its message's Kafka timestamp (epoch ms): ``record["transaction"]`` holds an enriched
    transaction (the transaction itself under ``"transaction"``) or ``record["feedback"]`` a label."""
    batches = Repartition("TerminalEventBatch", settings.partitions)
    for message in read_topic(settings, f"{settings.app_id}-by-terminal"):
        records, _ = batches.read([message.value])  # an undecodable message was dead-lettered by the worker
        for record in records:
            yield message.timestamp, record


def read_table(settings: Settings, table: str) -> dict[bytes, Any]:
    """A worker table's last value per key, read from its changelog topic (JSON values; a tombstone deletes)."""
    values: dict[bytes, Any] = {}
    for message in read_topic(settings, f"{settings.app_id}-{table}-changelog"):
        if message.value is None:
            values.pop(message.key, None)
        else:
            values[message.key] = json.loads(message.value)
    return values


def simulated(customers: int, days: int, seed: int = 7, train_days: int | None = None) -> tuple[pd.DataFrame, ModelArtifact]:
    """A drill's data: ``days`` of simulated transactions of ``customers`` cards (normalized, with labels), and a
    small model trained on their first ``train_days`` (two thirds by default)."""
    frame = normalize(simulate(n_customers=customers, n_terminals=2 * customers, n_days=days, seed=seed))
    train_days = days * 2 // 3 if train_days is None else train_days
    history = frame[frame["time"] < frame["time"].min() + train_days * 86_400].reset_index(drop=True)
    return frame, train_from_frame(history, replay_features(history), valid_days=3, config=TrainConfig(epochs=4))


@dataclass(frozen=True)
class Reference:
    """What an uninterrupted run of a frame gives (the offline replay, which one worker matches): scores and
    features by tx_id, final card states (``CardState.to_dict()``) by card id."""

    scores: Mapping[str, float]
    features: Mapping[str, np.ndarray]
    card_states: Mapping[str, dict]

    @classmethod
    def of(cls, frame: pd.DataFrame, artifact: ModelArtifact) -> Reference:
        inputs = replay_features(frame)
        tx_ids = frame["tx_id"].astype(str)
        return cls(dict(zip(tx_ids, artifact.predict_proba(inputs).tolist())), dict(zip(tx_ids, inputs.features)),
                   {card: state.to_dict() for card, state in replay_card_states(frame).items()})


#: Columns of the card features: they depend only on the card's own events, in its partition's order.
CARD_COLUMNS = np.array([name.startswith("card_") for name in FEATURE_NAMES])
#: Columns of the terminal features: they read only transactions older than the label delay (see :func:`replay`).
TERMINAL_COLUMNS = np.array([name.startswith("terminal_") for name in FEATURE_NAMES])


@dataclass(frozen=True)
class RunCheck:
    """What a run left behind, against what an uninterrupted run gives."""

    transactions: int  #: transactions replayed
    decisions: int  #: decision rows in the audit store
    missing: int  #: transactions without a decision
    doubled: int  #: transactions with more than one decision row
    decision_messages: int  #: messages on the decisions topic (re-sends after a crash or a rebalance included)
    scores_differing: int  #: decisions whose score is more than 1e-6 from the uninterrupted one
    score_gap: float  #: largest |stored score - uninterrupted score|
    card_features_differing: int  #: decisions whose card features differ from the uninterrupted ones
    terminal_features_differing: int  #: decisions whose terminal features differ (partitions far apart in event time)
    scores_unexplained: int  #: decisions whose score differs by more than 1e-6 although every feature is equal
    alerts: int  #: alerts in the audit store
    alert_messages: int  #: messages on the alerts topic
    alerts_missing: int  #: stored alerts whose tx_id is no key on the alerts topic
    alerts_unknown: int  #: keys on the alerts topic that are no stored alert
    cards: int  #: cards in the uninterrupted state
    cards_differing: int  #: cards whose changelogged state differs from it (or is missing)
    seconds: float  #: first to last decision (decided_at)

    @property
    def exact(self) -> bool:
        """Every transaction decided once, no alert lost or invented, each card's state and features as in an
        uninterrupted run (scores may still differ through terminal windows: see :func:`replay`)."""
        return self.decisions == self.transactions and not (
            self.missing or self.doubled or self.alerts_missing or self.alerts_unknown or self.cards_differing
            or self.card_features_differing
        )

    @property
    def events_per_s(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else float("nan")


def check_run(settings: Settings, reference: Reference) -> RunCheck:
    """Compare the audit store, the alerts and decisions topics and the card-state changelog with ``reference``."""
    stored = query(settings.audit_dir, "SELECT tx_id, score, is_alert, decided_at, features FROM decisions").to_pandas()
    counts = stored["tx_id"].value_counts()
    first = stored.drop_duplicates("tx_id").set_index("tx_id")
    common = first.index.intersection(pd.Index(list(reference.scores)))
    gaps = (first.loc[common, "score"] - pd.Series(reference.scores).loc[common]).abs()
    live = np.array([[dict(features)[name] for name in FEATURE_NAMES] for features in first.loc[common, "features"]])
    live = live.reshape(-1, len(FEATURE_NAMES))
    offline = np.array([reference.features[tx_id] for tx_id in common]).reshape(-1, len(FEATURE_NAMES))
    flagged = set(first.index[first["is_alert"]])
    alert_messages = read_topic(settings, settings.alerts_topic)
    alert_keys = {message.key.decode() for message in alert_messages}
    table = read_table(settings, "card-state")
    states = reference.card_states
    differing = sum(table.get(card.encode()) != json.loads(json.dumps(state)) for card, state in states.items())
    return RunCheck(
        transactions=len(reference.scores),
        decisions=len(stored),
        missing=len(reference.scores) - len(common),
        doubled=int((counts > 1).sum()),
        decision_messages=len(read_topic(settings, settings.decisions_topic)),
        scores_differing=int((gaps > 1e-6).sum()),
        score_gap=float(gaps.max()) if len(gaps) else float("nan"),
        card_features_differing=int((live[:, CARD_COLUMNS] != offline[:, CARD_COLUMNS]).any(axis=1).sum()),
        terminal_features_differing=int((live[:, TERMINAL_COLUMNS] != offline[:, TERMINAL_COLUMNS]).any(axis=1).sum()),
        scores_unexplained=int(((gaps.to_numpy() > 1e-6) & (live == offline).all(axis=1)).sum()),
        alerts=len(flagged),
        alert_messages=len(alert_messages),
        alerts_missing=len(flagged - alert_keys),
        alerts_unknown=len(alert_keys - flagged),
        cards=len(reference.card_states),
        cards_differing=int(differing),
        seconds=(stored["decided_at"].max() - stored["decided_at"].min()).total_seconds() if len(stored) else 0.0,
    )


def replay(services: LocalServices, frame: pd.DataFrame, steps: Sequence[Step] = (), rate: float | None = None,
           timeout_s: float = 600.0) -> None:
    """Produce ``frame`` (each fraud followed by its label, reported a label delay later) once every worker is
    ready, at ``rate`` events/s or as fast as possible, run each step when that fraction of the transactions has
    a stored decision, and wait until all have one.

    Terminal windows read only transactions older than the label delay, because transactions reach a terminal
    from many card partitions in any order; the same scores as an uninterrupted run therefore need partitions
    that stay less than the label delay apart in event time. Live traffic does; a replay at full speed
    compresses days into seconds, so a drill that compares scores paces it with ``rate``.
    """
    settings = services.settings
    create_topics(settings)
    services.wait_until_ready(timeout_s=120)
    total = len(frame) + int(frame["label"].sum()) if "label" in frame.columns else len(frame)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drill-producer")
    produced = pool.submit(produce, replay_events(frame, settings), settings, total=total, rate=rate, progress=False)
    deadline = time.monotonic() + timeout_s
    try:
        for fraction, action in sorted(steps, key=lambda step: step[0]):
            services.wait_for_decisions(int(fraction * len(frame)), timeout_s=max(deadline - time.monotonic(), 1.0))
            action(services)
        services.wait_for_decisions(len(frame), timeout_s=max(deadline - time.monotonic(), 1.0))
        produced.result()  # raises what the producer raised
    finally:
        pool.shutdown()
    time.sleep(3 * settings.audit_export_interval_s)  # a late second copy would be exported by now


__all__ = [
    "CARD_COLUMNS",
    "TERMINAL_COLUMNS",
    "Reference",
    "RunCheck",
    "Step",
    "check_run",
    "local_overrides",
    "read_table",
    "read_topic",
    "replay",
    "simulated",
]
