"""Record batches the producer gave up on are counted and logged (the rest of stream.batch_producer runs in
every end-to-end test and drill: decisions, and the state changelogs that recovery reads back)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import KafkaTimeoutError

from stream.batch_producer import _log_failure
from stream.metrics import UNDELIVERED


def undelivered(topic: str) -> float:
    return sum(sample.value for family in UNDELIVERED.collect() for sample in family.samples
               if sample.name.endswith("_total") and sample.labels == {"topic": topic})


def test_a_batch_the_broker_never_acknowledged_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        failed, delivered = loop.create_future(), loop.create_future()
        failed.set_exception(KafkaTimeoutError("request timed out"))
        delivered.set_result(None)
        before = undelivered("decisions")
        with caplog.at_level(logging.ERROR, logger="stream.batch_producer"):
            _log_failure(failed, "decisions")
            _log_failure(delivered, "decisions")
    finally:
        loop.close()
    assert undelivered("decisions") == before + 1
    assert [record.getMessage() for record in caplog.records] == [
        "a record batch for decisions was not delivered: KafkaTimeoutError: request timed out"
    ]
