"""Faust's own ceiling on this machine: a worker whose one agent only counts the events of a topic.

    python bench/counting_agent.py worker -l warn      # configured by COUNT_BROKER_URL, COUNT_TOPIC,
                                                        # COUNT_EXPECTED and COUNT_OUT

It consumes as the riskstream worker does (same client settings, at-least-once, raw bytes), and when it has
counted COUNT_EXPECTED events it writes the wall-clock times of the first and the last one to COUNT_OUT.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import faust

EXPECTED = int(os.environ.get("COUNT_EXPECTED", "0"))
OUT = Path(os.environ.get("COUNT_OUT", "count.json"))

app = faust.App(
    os.environ.get("COUNT_APP_ID", "bench-count"),
    broker=os.environ.get("COUNT_BROKER_URL", "kafka://127.0.0.1:9092"),
    processing_guarantee="at_least_once",
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=6.0,
    broker_rebalance_timeout=3.0,
    broker_heartbeat_interval=2.0,
    key_serializer="raw",
    value_serializer="raw",
    web_enabled=False,
    datadir=os.environ.get("COUNT_DATA_DIR", "var/bench/count"),
)
source = app.topic(os.environ.get("COUNT_TOPIC", "transactions"), key_serializer="raw", value_serializer="raw")


@app.agent(source)
async def count(stream: faust.StreamT) -> None:
    """Count events, nothing else; note when the first and the expected last arrived."""
    seen, first = 0, 0.0
    async for _ in stream:
        seen += 1
        if seen == 1:
            first = time.time()
        if seen == EXPECTED:
            OUT.write_text(json.dumps({"first": first, "last": time.time(), "count": seen}))


if __name__ == "__main__":
    app.main()
