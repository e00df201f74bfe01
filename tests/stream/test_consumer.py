"""The worker's consumer: its fetch wait follows the setting instead of Faust's fixed 1.5 s, and its seek to the
committed offsets runs with the stream partitions paused (stream/consumer.py says why)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from faust.types import TP

from stream.consumer import WorkerApp


def test_worker_consumer_waits_at_most_the_setting() -> None:
    async def build() -> int:
        app = WorkerApp("fetch-wait-test", broker="kafka://127.0.0.1:9", fetch_wait_s=0.02)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        return consumer._fetch_max_wait_ms

    assert asyncio.run(build()) == 20


def _seek_with(rebalance_meanwhile: bool) -> tuple[set[TP], set[TP], set[TP]]:
    """Partitions deliverable during the seek and after it, and those paused after it, for a consumer with an
    active and a buffered stream partition, a paused one and an active changelog partition."""

    async def seek() -> tuple[set[TP], set[TP], set[TP]]:
        app = WorkerApp("seek-test", broker="kafka://127.0.0.1:9", fetch_wait_s=1.5)
        app.Table("state")
        consumer = app.consumer
        active, buffered, paused = TP("seek-test-in", 0), TP("seek-test-in", 1), TP("seek-test-in", 2)
        changelog = TP("seek-test-state-changelog", 0)
        consumer._active_partitions = {active, changelog}
        consumer._buffered_partitions = {buffered}
        consumer._paused_partitions = {paused}
        during: set[TP] = set()

        async def seek_to_committed() -> Mapping[TP, int]:
            during.update(consumer._active_partitions | consumer._buffered_partitions)
            if rebalance_meanwhile:
                app.consumer_generation_id += 1
            return {}

        consumer.seek_to_committed = seek_to_committed
        await consumer.perform_seek()
        return during, consumer._active_partitions | consumer._buffered_partitions, consumer._paused_partitions

    return asyncio.run(seek())


def test_no_stream_partition_delivers_during_the_seek_and_all_resume_after_it() -> None:
    during, after, paused = _seek_with(rebalance_meanwhile=False)
    stream = {TP("seek-test-in", 0), TP("seek-test-in", 1)}
    changelog = TP("seek-test-state-changelog", 0)
    assert during == {changelog}  # table recovery may go on; the agents get nothing
    assert after == stream | {changelog}
    assert paused == {TP("seek-test-in", 2)}  # paused before, still paused


def test_partitions_held_by_a_seek_stay_paused_when_a_rebalance_began_meanwhile() -> None:
    during, after, paused = _seek_with(rebalance_meanwhile=True)
    assert after == {TP("seek-test-state-changelog", 0)}
    assert paused == {TP("seek-test-in", n) for n in range(3)}
