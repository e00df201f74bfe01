"""The worker's Kafka consumer: Faust's aiokafka consumer with a fetch wait that is a setting, and a seek that
holds the stream partitions back while it runs.

**Fetch wait.** A consumer's fetch request waits at the broker until data arrives or the fetch wait runs out.
Apache Kafka answers as soon as data arrives, so there the wait only spaces out idle polls; the embedded
broker answers a waiting fetch late, often only when the wait runs out, so at Faust's fixed 1.5 s each of the
worker's three stages added a quarter of a second or more to a transaction's latency (``bench/fetch_wait.py``
shows it). The setting keeps Faust's 1.5 s by default: with a short wait, card partitions drifted further
apart in event time than the terminal features tolerate (BENCHMARKS.md, "One worker").

**Seek after a rebalance.** Faust's recovery resumes the stream partitions and only then seeks them to their
committed offsets (``Recovery.on_recovery_completed``), so the agents received records fetched from the old
position while the seek ran. When it ended, the read offsets were reset under records still being delivered:
Faust booked the jump to the next one as a gap (as if acknowledged) and dropped the records fetched again as
already read. Under load a rebalance then lost the records that had been fetched but not yet processed
(BENCHMARKS.md, "A loss under rebalance"). Here the seek pauses the stream partitions first. faust-streaming
fixed the same order for apps without tables (issue 216, 2021); in 0.15.3 the path with tables still resumes first.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: driver.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.app.fetch_wait_ms  # read when the consumer starts its fetcher
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        """Seek every partition to its committed offset, no stream partition delivering meanwhile.

        Faust delivers a partition that is active or whose stream buffer was full ("buffered"), so both are
        held. Those held resume after the seek unless a new rebalance began meanwhile: its assignment then
        decides which partitions run.
        """
        held = {tp for tp in self._get_active_partitions() | self._buffered_partitions if not self._is_changelog_tp(tp)}
        generation = self.app.consumer_generation_id
        self._buffered_partitions.difference_update(held)
        self.pause_partitions(held)
        await super().perform_seek()
        if self.app.consumer_generation_id == generation:
            self.resume_partitions(held)


class _Transport(driver.Transport):
    Consumer = _Consumer


class WorkerApp(faust.App):
    """``faust.App`` on Kafka (aiokafka) whose worker consumer waits at most ``fetch_wait_s`` per fetch and
    seeks with its stream partitions paused."""

    def __init__(self, *args: Any, fetch_wait_s: float, **kwargs: Any) -> None:
        self.fetch_wait_ms = max(1, int(fetch_wait_s * 1000))
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)


__all__ = ["WorkerApp"]
