"""A worker restores every record of a table's changelog, whatever end offset the broker lists.

The changelog's last records share one produce batch, the layout after which the embedded broker lists the
partition's end offset as that batch's first offset + 1 (README, "The embedded broker"); Faust's own recovery
stopped there and the worker ran without the batch's other records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from stream.embedded import EmbeddedBroker, free_port

WORKER = Path(__file__).with_name("recovery_worker.py")
ROOT = Path(__file__).parents[2]  # the checkout, whose stream package the worker must import


def fill_changelog(broker: EmbeddedBroker, topic: str, batches: list[list[int]]) -> dict[str, dict]:
    """Write one produce batch per list of numbers (key ``k<n>``, value ``{"n": n}``); the records written."""
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=200)
    written = {}
    try:
        for batch in batches:
            for number in batch:
                producer.send(topic, key=f"k{number}".encode(), value=json.dumps({"n": number}).encode(), partition=0)
                written[f"k{number}"] = {"n": number}
            producer.flush()  # what was sent since the last flush leaves as one batch
    finally:
        producer.close()
    return written


@pytest.mark.timeout(120)
def test_worker_restores_the_whole_last_batch_of_a_changelog(broker: EmbeddedBroker, tmp_path: Path) -> None:
    app_id = f"recovery-{tmp_path.name}"
    written = fill_changelog(broker, f"{app_id}-state-changelog", [[0, 1, 2], [3, 4, 5, 6, 7]])
    output = tmp_path / "restored.json"
    env = os.environ | {"RECOVERY_APP_ID": app_id, "RECOVERY_BROKER_URL": broker.url, "RECOVERY_OUTPUT": str(output),
                        "RECOVERY_DATA_DIR": str(tmp_path / "data"), "RECOVERY_WEB_PORT": str(free_port()),
                        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen([sys.executable, str(WORKER), "worker", "-l", "info"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not output.exists() and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert output.exists(), (tmp_path / "worker.log").read_text()
    assert json.loads(output.read_text()) == written
