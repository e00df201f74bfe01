"""A local S3-compatible server (moto's) that holds the embedded broker's data outside the broker's process.

The embedded broker keeps its topics, messages and committed offsets in memory unless told to store them in
S3; with this server running, the broker can stop and start again (an outage drill) and come back with all of
it, as a Kafka broker with its disk would. The server itself keeps everything in its own memory, so it must
outlive the broker restarts it is for. Only the tests and the fault scripts start one.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

from stream.embedded import BrokerError, ChildProcess, free_port


class LocalObjectStore(ChildProcess):
    """An S3 server on loopback with one bucket, as a context manager that stops it on exit (and loses its data).

    ``storage_url`` and ``env`` are what a broker needs to keep its data here (the AWS_* variables that the
    broker's object-store client reads).
    """

    def __init__(self, bucket: str = "broker", port: int | None = None) -> None:
        self.bucket = bucket
        self.port = port or free_port()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_url(self) -> str:
        return f"s3://{self.bucket}/"

    @property
    def env(self) -> dict[str, str]:
        """Credentials (any will do locally), region and endpoint for an S3 client, plain HTTP allowed."""
        return {
            "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true",
        }

    def start(self, timeout_s: float = 30.0) -> LocalObjectStore:
        """Start the server and create the bucket; raises if either fails within ``timeout_s``."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                raise BrokerError(f"the local S3 server exited with status {self._process.returncode} (is moto[server] installed?)")
            try:
                urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{self.bucket}", method="PUT"), timeout=2).close()
                return self
            except OSError as error:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerError(f"the local S3 server did not answer on {self.endpoint} within {timeout_s:.0f} s") from error
                time.sleep(0.2)


__all__ = ["LocalObjectStore"]
