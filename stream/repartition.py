"""Re-keying between the worker's stages: one message per destination partition per batch.

Consuming or producing a message through Faust costs about as much as the work riskstream does for a
transaction, and re-keying used to cost two of each per transaction (ingest to card stage, card stage to
terminal stage). Each stage's batch already holds, for every partition, the records bound for it, so those go
in one message (a ``TransactionBatch`` or ``TerminalEventBatch``) instead of one message each.

A record still lands on the partition that owns its card's or terminal's state: the one Kafka's default
partitioner (murmur2 of the key, as aiokafka, kafka-python and the Java client compute it) gives its key, which
is also where the state table's changelog puts that key. Records keep their order within a partition, which is
all the stages need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from aiokafka.partitioner import murmur2

from stream.codec import AvroCodec
from stream.pipeline import Reject, decode_valid

Item = TypeVar("Item")

#: At most this many records in one message: bounds the batch a stage takes (a stage takes ``partitions``
#: messages at a time).
MAX_RECORDS = 500
#: At most this many bytes in one message, well under the largest request a producer sends (Faust's default,
#: 1,000,000 bytes). 500 ordinary records take about 100 KB, but every optional field at its longest takes over
#: 3 KB a record, so a message is split further when it would be larger.
MAX_MESSAGE_BYTES = 512 * 1024
#: What one message may hold before it is split: far more than any ``max_records`` records can take.
_MAX_ENCODED_BYTES = 64 * 1024 * 1024


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` on a topic of ``partitions`` partitions."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def by_partition(items: Iterable[Item], key: Callable[[Item], bytes], partitions: int) -> dict[int, list[Item]]:
    """``items`` grouped by the partition of their key (:func:`partition_for`), each group in order.

    >>> by_partition([b"c", b"d", b"c"], key=lambda item: item, partitions=4)
    {2: [b'c', b'c'], 1: [b'd']}
    """
    groups: dict[int, list[Item]] = {}
    for item in items:
        groups.setdefault(partition_for(key(item), partitions), []).append(item)
    return groups


class Repartition:
    """The messages of one internal topic: records grouped by their key's partition, and read back in order.

    >>> transactions = Repartition("TransactionBatch", partitions=8)
    >>> records = [{"tx_id": f"t{i}", "event_time": 0, "card_id": f"c{i % 3}", "terminal_id": "x", "amount": 1.0}
    ...            for i in range(6)]
    >>> messages = transactions.messages(records, key=lambda record: record["card_id"])
    >>> len(messages)  # three cards, three partitions here
    3
    >>> records, rejects = transactions.read([value for _, value in messages] + [b"junk"])
    >>> [record["tx_id"] for record in records], [reject.reason for reject in rejects]
    (['t0', 't3', 't1', 't4', 't2', 't5'], ['truncated'])
    """

    def __init__(self, schema: str, partitions: int, max_records: int = MAX_RECORDS, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.codec = AvroCodec(schema, max_message_bytes=_MAX_ENCODED_BYTES)
        self.partitions = partitions
        self.max_records = max_records
        self.max_bytes = max_bytes

    def messages(self, records: Iterable[Item], key: Callable[[Item], str]) -> list[tuple[int, bytes]]:
        """``(partition, value)`` per partition that ``records`` go to, each value holding its records in order
        (split into messages of at most ``max_records`` records and ``max_bytes`` bytes)."""
        groups = by_partition(records, lambda record: key(record).encode(), self.partitions)
        return [
            (partition, value)
            for partition, events in groups.items()
            for start in range(0, len(events), self.max_records)
            for value in self._encoded(events[start : start + self.max_records])
        ]

    def _encoded(self, events: list[Item]) -> list[bytes]:
        """``events`` in one message, or halved until each message is at most ``max_bytes`` (a record alone is
        always far smaller: its fields' lengths are validated)."""
        value = self.codec.encode({"events": events})
        if len(value) <= self.max_bytes or len(events) == 1:
            return [value]
        half = len(events) // 2
        return self._encoded(events[:half]) + self._encoded(events[half:])

    def read(self, values: Iterable[bytes | None]) -> tuple[list[dict[str, Any]], list[Reject]]:
        """The records of a stage's batch of messages, message by message, each in its order, and the messages
        that do not decode (one left over from an older version, whose internal schema id is retired): those
        go to the dead letters, and the rest of the batch goes on."""
        batches, rejects = decode_valid(values, self.codec, _any_batch)
        return [event for batch in batches for event in batch["events"]], rejects


def _any_batch(batch: dict[str, Any]) -> None:
    """A batch that decodes is valid: its records were validated before they were re-keyed."""
