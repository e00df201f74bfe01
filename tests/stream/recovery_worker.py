"""A Faust worker with one table and riskstream's table manager, for tests/stream/test_recovery.py.

``python recovery_worker.py worker`` restores the table ``state`` from its changelog and, once recovery has
completed, writes what it holds as JSON to ``RECOVERY_OUTPUT``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import faust

from stream.recovery import FetchedEndTableManager


def main() -> None:
    app = faust.App(os.environ["RECOVERY_APP_ID"], broker=os.environ["RECOVERY_BROKER_URL"], store="memory://",
                    datadir=os.environ["RECOVERY_DATA_DIR"], web_port=int(os.environ["RECOVERY_WEB_PORT"]),
                    topic_partitions=1, TableManager=FetchedEndTableManager,
                    broker_session_timeout=6.0, broker_rebalance_timeout=4.0)  # joins the group in seconds, not 30
    table = app.Table("state", partitions=1, key_type=bytes)
    source = app.topic(f"{app.conf.id}-source", partitions=1)

    @app.agent(source)
    async def idle(stream: faust.StreamT) -> None:  # an agent, so that the worker is assigned partitions
        async for _ in stream:
            pass

    @table.on_recover
    async def report() -> None:
        restored = {key.decode(): value for key, value in table.items()}
        Path(os.environ["RECOVERY_OUTPUT"]).write_text(json.dumps(restored))

    app.main()


if __name__ == "__main__":
    main()
