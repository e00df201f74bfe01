"""The worker consumer's fetch wait follows the setting instead of Faust's fixed 1.5 s."""

from __future__ import annotations

import asyncio

from stream.fetching import FetchWaitApp


def test_worker_consumer_waits_at_most_the_setting() -> None:
    async def build() -> int:
        app = FetchWaitApp("fetch-wait-test", broker="kafka://127.0.0.1:9", fetch_wait_s=0.02)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        return consumer._fetch_max_wait_ms

    assert asyncio.run(build()) == 20
