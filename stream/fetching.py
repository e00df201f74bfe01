"""A Faust app whose worker consumer's fetch wait is a setting; Faust's aiokafka driver fixes it at 1.5 s.

A consumer's fetch request waits at the broker until data arrives or the fetch wait runs out. Apache Kafka
answers as soon as data arrives, so there the wait only spaces out idle polls; the embedded broker answers
a waiting fetch late, often only when the wait runs out, so at 1.5 s each of the worker's three stages
added a quarter of a second or more to a transaction's latency (``bench/fetch_wait.py`` shows it). The
setting keeps Faust's 1.5 s by default: with a short wait, card partitions drifted further apart in event
time than the terminal features tolerate (BENCHMARKS.md, "One worker").
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


class _Transport(driver.Transport):
    Consumer = _Consumer


class FetchWaitApp(faust.App):
    """``faust.App`` on Kafka (aiokafka) whose worker consumer waits at most ``fetch_wait_s`` per fetch."""

    def __init__(self, *args: Any, fetch_wait_s: float, **kwargs: Any) -> None:
        self.fetch_wait_ms = max(1, int(fetch_wait_s * 1000))
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)


__all__ = ["FetchWaitApp"]
