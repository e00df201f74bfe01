"""A batch's messages sent as one Kafka record batch per partition, through the producer Faust itself uses.

Faust's ``send_soon`` costs tens of microseconds of Python per message (a pending message, Faust's buffer,
aiokafka's per-message path into its accumulator), more than the work riskstream does for a transaction, and a
transaction produced three such messages: its decision and two state writes (changelog messages). A batch's
messages for one partition go instead into one aiokafka record batch (``create_batch``, ``send_batch``), at a
few microseconds a record. Partitions follow the key as Kafka's default partitioner places it
(``stream.repartition.by_partition``), where ``send_soon`` would have put them.

The batches go through Faust's own aiokafka producer, which Faust flushes before every offset commit, so a
source offset is committed only once the messages produced from it were sent: at-least-once, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, MutableMapping
from operator import itemgetter
from typing import Any, NamedTuple

import faust
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP

from stream import metrics
from stream.repartition import by_partition, partition_for

logger = logging.getLogger(__name__)

Message = tuple[bytes, bytes]  # (key, value)


class SentBatch(NamedTuple):
    """One record batch handed to the producer: its partition, its number of records, and its delivery."""

    partition: int
    records: int
    delivered: asyncio.Future


def _aiokafka_producer(app: faust.App) -> Any:
    return app.producer._ensure_producer()  # the aiokafka producer under Faust's (a private attribute)


async def partition_count(app: faust.App, topic: str) -> int:
    """How many partitions ``topic`` has, from the brokers' metadata (waits for it; cached by the client)."""
    return len(await _aiokafka_producer(app).partitions_for(topic))


async def send_batched(app: faust.App, topic: str, messages: Iterable[Message]) -> list[SentBatch]:
    """Send ``messages`` to ``topic``, each partition's in one record batch (or several, when one fills up)."""
    producer = _aiokafka_producer(app)
    groups = by_partition(messages, itemgetter(0), await partition_count(app, topic))
    sent = []
    for partition, group in groups.items():
        batch = producer.create_batch()
        for key, value in group:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start the next
                sent.append(SentBatch(partition, batch.record_count(), await producer.send_batch(batch, topic, partition=partition)))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)  # a batch takes its first record whatever its size
        sent.append(SentBatch(partition, batch.record_count(), await producer.send_batch(batch, topic, partition=partition)))
    for one in sent:
        one.delivered.add_done_callback(lambda future, topic=topic: _log_failure(future, topic))
    return sent


def _log_failure(delivered: asyncio.Future, topic: str) -> None:
    """Log and count a batch the producer gave up on (after its retries), as Faust does a failed send."""
    if not delivered.cancelled() and delivered.exception() is not None:
        metrics.UNDELIVERED.labels(topic).inc()
        logger.error("a record batch for %s was not delivered: %s", topic, delivered.exception())


class BatchedTable(MutableMapping[bytes, Any]):
    """A Faust table whose writes change its local store at once and reach its changelog at :meth:`flush`, in
    record batches (:func:`send_batched`) instead of a ``send_soon`` per write.

    The changelog messages are what Faust would have sent (its own key and value serializers, the key's
    partition, as the table's ``use_partitioner`` asks), so recovery and standbys read them as before; the
    store learns each partition's last changelog offset when its batch is delivered, as Faust's
    ``_on_changelog_sent`` does, which is what a RocksDB store resumes recovery from.
    """

    def __init__(self, table: faust.Table) -> None:
        self.table = table
        self._pending: dict[bytes, Any] = {}
        self._flushing = asyncio.Lock()  # two stages' flushes keep their order: a key's newer state lands last

    def __getitem__(self, key: bytes) -> Any:
        return self.table[key]

    def get(self, key: bytes, default: Any = None) -> Any:
        return self.table.get(key, default)

    def __setitem__(self, key: bytes, value: Any) -> None:
        self._store(key, value)
        self._pending[key] = value

    def _store(self, key: bytes, value: Any) -> None:
        """What ``Table.__setitem__`` does after sending the changelog message: the value into the local store.

        Faust's RocksDB store files a write under the partition of the event being processed. A stage writes
        after its whole batch, with no event current, and the key's changelog partition (which recovery files
        it under) need not be that event's anyway: the value goes to the key's partition instead.
        """
        store = self.table.data
        if not isinstance(store, RocksDBStore):
            store[key] = value
            return
        encoded = store._encode_key(key)
        partition = partition_for(encoded, self.table.partitions)
        store._db_for_partition(partition).put(encoded, store._encode_value(value))
        store._key_index[encoded] = partition

    def __delitem__(self, key: bytes) -> None:
        raise NotImplementedError("states are never deleted through a stage")

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    async def flush(self, app: faust.App) -> None:
        """Send the changelog messages of the writes since the last flush."""
        async with self._flushing:
            if not self._pending:
                return
            topic = self.table.changelog_topic
            messages = [
                (topic.prepare_key(key, self.table.key_serializer)[0], topic.prepare_value(value, self.table.value_serializer)[0])
                for key, value in self._pending.items()
            ]
            self._pending = {}
            name = topic.get_topic_name()
            for batch in await send_batched(app, name, messages):
                batch.delivered.add_done_callback(lambda future, batch=batch: self._persisted(TP(name, batch.partition), batch.records, future))

    def _persisted(self, tp: TP, records: int, delivered: asyncio.Future) -> None:
        if not delivered.cancelled() and delivered.exception() is None and delivered.result() is not None:
            self.table.data.set_persisted_offset(tp, delivered.result().offset + records - 1)


__all__ = ["BatchedTable", "SentBatch", "partition_count", "send_batched"]
