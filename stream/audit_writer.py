"""The single audit writer: decisions and feedback from Kafka into the DuckDB audit store.

Exactly one runs (DuckDB allows one writing process). Offsets are committed only after the store has
flushed, and the store ignores a second copy of a tx_id, so a crash re-delivers without doubling anything.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

from kafka import KafkaConsumer

from audit import AuditStore
from stream.codec import AvroCodec
from stream.exceptions import EventDecodeError
from stream.privacy import load_tokenizer
from stream.settings import Settings
from stream.validation import validate_feedback

logger = logging.getLogger(__name__)

MAX_BUFFERED = 20_000


class AuditWriter:
    """Consumes the decisions and feedback topics and appends them to the audit store in batches."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tokenize = load_tokenizer(settings)  # refuses to start without a key outside demo mode
        self.codecs = {settings.decisions_topic: AvroCodec("Decision"), settings.feedback_topic: AvroCodec("Feedback")}
        self.rejected = 0
        self._stopping = False

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """Finish the current batch, flush, commit and exit (also the SIGTERM/SIGINT handler)."""
        self._stopping = True

    def run(self, max_idle_s: float | None = None) -> None:
        """Consume until stopped (or until ``max_idle_s`` pass with nothing new, for batch jobs)."""
        consumer = KafkaConsumer(
            *self.codecs,
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=f"{self.settings.app_id}-audit",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{self.settings.app_id}-audit",
            max_poll_records=5000,
            session_timeout_ms=int(self.settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self.settings.session_timeout_s * 1000 // 3),
        )
        store = AuditStore(self.settings.audit_dir, export_interval_s=self.settings.audit_export_interval_s)
        last_flush = last_export = last_data = time.monotonic()
        buffered = 0
        try:
            while not self._stopping:
                polled = consumer.poll(timeout_ms=200)
                for partition, messages in polled.items():
                    buffered += self._add(store, partition.topic, [message.value for message in messages])
                now = time.monotonic()
                if polled:
                    last_data = now
                if buffered and (buffered >= MAX_BUFFERED or now - last_flush >= self.settings.audit_flush_interval_s):
                    self._flush(store, consumer)
                    buffered, last_flush = 0, now
                if now - last_export >= self.settings.audit_export_interval_s:
                    store.export()  # rows flushed since the last export become visible to analysts
                    last_export = now
                if max_idle_s is not None and now - last_data > max_idle_s:
                    break
            self._flush(store, consumer)
        finally:
            store.close()
            consumer.close(autocommit=False)

    def _add(self, store: AuditStore, topic: str, values: list[bytes | None]) -> int:
        codec = self.codecs[topic]
        records = []
        for value in values:
            try:
                record = codec.decode(value or b"")
                if topic == self.settings.feedback_topic:
                    validate_feedback(record)
                    if record.get("card_id"):  # decisions arrive tokenized by the worker; labels do not
                        record["card_id"] = self.tokenize(record["card_id"])
            except EventDecodeError as error:
                # The worker dead-letters bad feedback; the writer only counts and skips it.
                self.rejected += 1
                logger.debug("audit writer skipped a %s message: %s", topic, error)
                continue
            records.append(record)
        if topic == self.settings.decisions_topic:
            store.add_decisions(records)
        else:
            store.add_labels(records)
        return len(records)

    def _flush(self, store: AuditStore, consumer: KafkaConsumer) -> None:
        result = store.flush()
        consumer.commit()
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
