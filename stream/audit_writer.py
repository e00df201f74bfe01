"""The single audit writer: decisions and feedback from Kafka into the DuckDB audit store.

Exactly one runs (DuckDB allows one writing process). A flush runs on the store's own thread while the next
polls are decoded; each partition's offset is committed only once a flush holding its messages has stored
them, and the store ignores a second copy of a tx_id, so a crash re-delivers without doubling anything.
Decisions are decoded a whole poll at a time (:mod:`stream.avro_batch`); the first decision of a model
version records that version's feature names and training-data bins from the registry, which name the
stored features and are the baseline of the ``drift`` view. Label card ids are tokenized here (decisions
arrive tokenized by the worker), and with ``audit_retention_days`` set the writer deletes older rows hourly.
"""

from __future__ import annotations

import logging
import signal
import time
from concurrent.futures import Future
from types import FrameType

import pyarrow.compute as pc
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata

from audit import AuditStore, FlushResult, InvalidRecordError
from models.exceptions import ModelError
from models.registry import manifest_of
from stream.avro_batch import AvroBatchDecoder
from stream.codec import AvroCodec, framed_schema_id
from stream.exceptions import EventDecodeError, StreamError
from stream.security import kafka_python_options
from stream.privacy import load_tokenizer
from stream.settings import Settings
from stream.validation import validate_feedback

logger = logging.getLogger(__name__)

MAX_BUFFERED = 20_000
# The writer buffers for seconds before it stores anything, so its fetches may wait: at 1,000 decisions a second
# a fetch that returned as soon as anything arrived made dozens of small polls a second, each with its fixed
# cost of decoding and bookkeeping; one that waits for 256 KiB or half a second makes two (the writer's CPU in
# bench/latency.py went from 0.31 to 0.24 of a core).
FETCH_MIN_BYTES = 256 * 1024
FETCH_MAX_WAIT_MS = 500
RETENTION_EVERY_S = 3600.0
MODEL_RETRY_S = 300.0


class AuditWriter:
    """Consumes the decisions and feedback topics and appends them to the audit store in batches."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tokenize = load_tokenizer(settings)  # refuses to start without a key outside demo mode
        self.decisions = AvroBatchDecoder(AvroCodec("Decision"))
        self.feedback = AvroCodec("Feedback")
        self.rejected = 0
        self._stopping = False
        self._missing_models: dict[str, float] = {}  # version -> when the registry last failed to give it
        self._read: dict[TopicPartition, int] = {}  # offsets past the messages buffered since the last flush
        self._flushing: tuple[Future[FlushResult], dict[TopicPartition, int]] | None = None  # and its offsets
        self._uncommitted: dict[TopicPartition, int] = {}  # stored, but the broker did not take the commit yet

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """Finish the current batch, flush, commit and exit (also the SIGTERM/SIGINT handler)."""
        self._stopping = True

    def run(self, max_idle_s: float | None = None) -> None:
        """Consume until stopped (or until ``max_idle_s`` pass with nothing new, for batch jobs)."""
        settings = self.settings
        consumer = KafkaConsumer(
            settings.decisions_topic,
            settings.feedback_topic,
            bootstrap_servers=settings.bootstrap_servers,
            group_id=f"{settings.app_id}-audit",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{settings.app_id}-audit",
            max_poll_records=5000,
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            session_timeout_ms=int(settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(settings.session_timeout_s * 1000 // 3),
            **kafka_python_options(settings),
        )
        store = AuditStore(settings.audit_dir, export_interval_s=settings.audit_export_interval_s, export_in_background=True)
        last_flush = last_data = time.monotonic()
        last_prune = -float("inf")
        buffered = 0
        try:
            while not self._stopping:
                polled = consumer.poll(timeout_ms=200)
                buffered += self.add_poll(store, polled)
                now = time.monotonic()
                if polled:
                    last_data = now
                self._commit_flushed(consumer)
                if (self._read or self._uncommitted) and (buffered >= MAX_BUFFERED or now - last_flush >= settings.audit_flush_interval_s):
                    self._start_flush(store, consumer)
                    buffered, last_flush = 0, now
                store.export_if_due()  # rows flushed since the last export become visible to analysts
                if settings.audit_retention_days and now - last_prune >= RETENTION_EVERY_S:
                    store.prune(settings.audit_retention_days)
                    last_prune = now
                if max_idle_s is not None and now - last_data > max_idle_s:
                    break
            self._start_flush(store, consumer)
            self._commit_flushed(consumer, wait=True)
        finally:
            store.close()
            consumer.close(autocommit=False)

    def add_poll(self, store: AuditStore, polled: dict[TopicPartition, list[ConsumerRecord]]) -> int:
        """Buffer a poll's decisions and labels, and note the offsets the next flush may commit."""
        buffered = 0
        for partition, messages in polled.items():
            values = [message.value for message in messages]
            if partition.topic == self.settings.decisions_topic:
                buffered += self.add_decisions(store, values)
            else:
                buffered += self.add_labels(store, values)
            self._read[partition] = messages[-1].offset + 1
        return buffered

    def add_decisions(self, store: AuditStore, values: list[bytes | None]) -> int:
        """Decode a poll's decisions in one go and buffer them; unreadable ones are counted and skipped.

        A decision under a schema id above every id this writer knows is no malformed message but one from a
        newer worker: skipped, its offset would be committed and the decision lost for the store. The writer stops
        instead (StreamError), before committing past it, and reads it again once upgraded. An unknown id below
        (junk that happens to start with a zero byte) is malformed like any other.
        """
        batch = self.decisions.decode(values)
        newest = self.decisions.codec.registry.newest_id
        unknown = [framed_schema_id(values[index] or b"") for index, error in batch.errors if error.reason == "unknown_schema_id"]
        newer = [schema_id for schema_id in unknown if schema_id > newest]
        if newer:
            raise StreamError(f"{len(newer)} decision(s) under schema id {newer[0]}, newer than this audit writer's "
                              f"{newest}: written by newer workers? Upgrade the audit writer; it stopped before committing past them")
        self._skip(len(batch.errors), "decision", batch.errors[0][1] if batch.errors else None)
        versions = set(pc.unique(batch.table.column("model_version")).to_pylist()) if batch.table is not None else set()
        versions.update(record.get("model_version") for record in batch.records)
        self._record_models(store, {version for version in versions if isinstance(version, str)})
        try:
            if batch.table is not None:
                store.add_decision_table(batch.table)
            store.add_decisions(batch.records)
            return batch.decoded
        except InvalidRecordError:
            return self._add_one_by_one(store, values)

    def add_labels(self, store: AuditStore, values: list[bytes | None]) -> int:
        """Decode, validate and tokenize feedback labels and buffer them; bad ones are counted and skipped."""
        records = []
        for value in values:
            try:
                record = self.feedback.decode(value or b"")
                validate_feedback(record, now_ms=int(time.time() * 1000))
            except EventDecodeError as error:
                self._skip(1, "feedback", error)  # the worker dead-letters bad feedback; the writer only counts it
                continue
            if record.get("card_id"):
                record["card_id"] = self.tokenize(record["card_id"])
            records.append(record)
        store.add_labels(records)
        return len(records)

    def _add_one_by_one(self, store: AuditStore, values: list[bytes | None]) -> int:
        """The slow path for a batch holding a decision the store refuses: each alone, the bad ones skipped."""
        added = 0
        for value in values:
            try:
                store.add_decisions([self.decisions.codec.decode(value or b"")])
                added += 1
            except (EventDecodeError, InvalidRecordError) as error:
                self._skip(1, "decision", error)
        return added

    def _record_models(self, store: AuditStore, versions: set[str]) -> None:
        """Record unseen model versions' feature names and reference bins from the registry, when it has them."""
        now = time.monotonic()
        for version in versions:
            if store.has_model(version) or now - self._missing_models.get(version, -MODEL_RETRY_S) < MODEL_RETRY_S:
                continue
            try:
                manifest = manifest_of(self.settings.model_registry, version)
            except ModelError as error:
                self._missing_models[version] = now
                logger.warning("model %s is not in the registry (%s): its features stay unnamed, no drift baseline", version, error)
                continue
            store.add_model(version, manifest.get("reference") or {"feature_names": manifest["feature_names"]})
            logger.info("audit store: recorded model %s", version)

    def _skip(self, count: int, kind: str, error: Exception | None) -> None:
        if count:
            self.rejected += count
            logger.warning("audit writer skipped %d %s message(s), e.g.: %s", count, kind, error)

    def _start_flush(self, store: AuditStore, consumer: KafkaConsumer) -> None:
        """Store what was buffered since the last flush, on the store's thread; one flush runs at a time."""
        self._commit_flushed(consumer, wait=True)
        self._flushing = (store.flush_in_background(), self._read)
        self._read = {}

    def _commit_flushed(self, consumer: KafkaConsumer, wait: bool = False) -> None:
        """Once the flush in flight has stored its rows, commit the offsets past them (and any not taken yet).

        A failed flush raises here (AuditError) and stops the writer: its messages were never committed, so its
        successor reads them again.
        """
        if self._flushing is None or not (wait or self._flushing[0].done()):
            return
        future, offsets = self._flushing
        self._flushing = None
        result = future.result()
        self._uncommitted.update(offsets)
        if self._uncommitted:
            try:
                consumer.commit({partition: OffsetAndMetadata(offset, "", -1) for partition, offset in self._uncommitted.items()})
                self._uncommitted = {}
            except KafkaError as error:
                # The rows are stored and a second copy of one is ignored, so the offsets can wait for the broker:
                # retried at each flush; should this process stop first, its successor re-reads them. A partition
                # given to another consumer meanwhile is its business now.
                assigned = consumer.assignment()
                self._uncommitted = {partition: offset for partition, offset in self._uncommitted.items() if partition in assigned}
                logger.warning("audit writer could not commit its offsets (%s); retrying at the next flush", error)
        if result.decisions_inserted or result.labels_inserted:
            logger.info(
                "audit flush: %d decisions (%d duplicates ignored), %d labels",
                result.decisions_inserted,
                result.decisions_duplicate,
                result.labels_inserted,
            )


def run_audit_writer(settings: Settings) -> None:
    """Run the writer in the foreground until SIGTERM or SIGINT."""
    writer = AuditWriter(settings)
    signal.signal(signal.SIGTERM, writer.stop)
    signal.signal(signal.SIGINT, writer.stop)
    writer.run()


__all__ = ["AuditWriter", "run_audit_writer"]
