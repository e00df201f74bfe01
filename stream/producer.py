"""Replaying a transaction file into Kafka as Avro events, in event-time order.

Fraud labels in the file can be replayed too, as feedback events reported ``label_delay_days`` after their
transaction (a chargeback's typical delay in the handbook's protocol). Each is sent right after its transaction:
its ``reported_at``, not its place in the stream, decides from when it counts (see
:meth:`models.features.TerminalState.label`), so a replay's scores do not depend on how far one worker's
feedback ingest runs behind another's card stage. Sent when due instead, a label could reach its terminal after
transactions reported later than it, which it then could not count for.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pandas as pd
from kafka import KafkaProducer
from tqdm.auto import tqdm

from models.features import DAY
from stream.codec import AvroCodec
from stream.security import kafka_python_options
from stream.settings import Settings


@dataclass(frozen=True)
class Event:
    """One message to send: its topic, key and encoded value, and its event time in seconds."""

    topic: str
    key: bytes
    value: bytes
    time: float


def transaction_record(row: pd.Series | dict) -> dict:
    """The Avro ``Transaction`` record of a normalized frame row (see :func:`models.dataset.normalize`)."""
    return {
        "tx_id": str(row["tx_id"]),
        "event_time": int(round(float(row["time"]) * 1000)),
        "card_id": str(row["card_id"]),
        "terminal_id": str(row["terminal_id"]),
        "amount": float(row["amount"]),
        "currency": "EUR",
        "merchant_category": None,
        "channel": None,
        "country": None,
        "device_id": None,
    }


def reported_labels(frame: pd.DataFrame, label_delay_days: float | None, now: float | None = None) -> list[bool]:
    """Which rows get a label in a replay: the frauds whose label, ``label_delay_days`` after them, has been
    reported by ``now`` (epoch seconds; the clock's by default). A label from the future has not happened yet,
    and the worker would refuse it (``timestamp_in_future``), so a replay of the last days leaves theirs out.

    >>> frame = pd.DataFrame({"time": [0.0, 1.0, 20 * DAY], "label": [1, 0, 1]})
    >>> reported_labels(frame, 7.0, now=10 * DAY), reported_labels(frame, None)
    ([True, False, False], [False, False, False])
    """
    if label_delay_days is None or "label" not in frame.columns:
        return [False] * len(frame)
    now = time.time() if now is None else now
    return ((frame["label"] == 1) & (frame["time"] + label_delay_days * DAY <= now)).tolist()


def replay_events(frame: pd.DataFrame, settings: Settings, label_delay_days: float | None = 7.0) -> Iterator[Event]:
    """Transactions in time order, each fraud followed by its label reported ``label_delay_days`` later (none
    when ``label_delay_days`` is None; see :func:`reported_labels`)."""
    transactions = AvroCodec("Transaction")
    feedback = AvroCodec("Feedback")
    frauds = reported_labels(frame, label_delay_days)
    delay_s = (label_delay_days or 0.0) * DAY
    records = frame[["tx_id", "time", "card_id", "terminal_id", "amount"]].to_dict("records")
    for record, fraud in zip(records, frauds):
        value = transactions.encode(transaction_record(record))
        yield Event(settings.transactions_topic, str(record["card_id"]).encode(), value, float(record["time"]))
        if fraud:
            yield _label_event(record, float(record["time"]) + delay_s, settings, feedback)


def _label_event(record: dict, at: float, settings: Settings, codec: AvroCodec) -> Event:
    value = codec.encode(
        {
            "tx_id": str(record["tx_id"]),
            "is_fraud": True,
            "source": "chargeback",
            "reported_at": int(round(at * 1000)),
            "card_id": str(record["card_id"]),
            "terminal_id": str(record["terminal_id"]),
        }
    )
    return Event(settings.feedback_topic, str(record["tx_id"]).encode(), value, at)


def produce(
    events: Iterator[Event],
    settings: Settings,
    total: int | None = None,
    rate: float | None = None,
    progress: bool = True,
) -> int:
    """Send events (at ``rate`` events/s, or as fast as possible) and wait until all are acknowledged."""
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        linger_ms=20,
        batch_size=256 * 1024,
        client_id=f"{settings.app_id}-producer",
        **kafka_python_options(settings),
    )
    sent = 0
    started = time.monotonic()
    try:
        for event in tqdm(events, total=total, disable=not progress, unit="ev", desc="producing", mininterval=0.5):
            if rate:
                delay = started + sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            producer.send(event.topic, key=event.key, value=event.value)
            sent += 1
        producer.flush()
    finally:
        producer.close()
    return sent


def send_raw(settings: Settings, topic: str, values: Iterable[bytes]) -> None:
    """Send raw bytes as they are (e.g. malformed messages, to exercise the dead-letter path)."""
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", **kafka_python_options(settings))
    try:
        for value in values:
            producer.send(topic, value=value)
        producer.flush()
    finally:
        producer.close()


__all__ = ["Event", "produce", "replay_events", "send_raw", "transaction_record"]
