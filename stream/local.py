"""A worker and the audit writer as local subprocesses, for the demo and the end-to-end tests.

Operators run the same two commands themselves (``faust -A stream.app worker`` and
``riskstream audit-writer``); this only starts them with one set of settings and stops them again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from audit import query
from stream.embedded import free_port
from stream.exceptions import StreamError
from stream.settings import Settings


def isolated_overrides(name: str, broker_url: str, workdir: Path, **changes: Any) -> dict[str, Any]:
    """Settings for a run of its own on a shared broker: topics and app id named after ``name``, folders under
    ``workdir``, a free web port, timeouts short enough for tests and benchmarks; ``changes`` win."""
    topics = {f"{topic}_topic": f"{name}-{topic.replace('_', '-')}" for topic in ("transactions", "feedback", "decisions", "alerts", "dead_letter")}
    return {
        "broker_url": broker_url, "app_id": name, **topics, "partitions": 4, "audit_dir": workdir / "audit",
        "data_dir": workdir / "worker", "web_port": free_port(), "audit_export_interval_s": 1.0, "audit_flush_interval_s": 0.5,
        "session_timeout_s": 6.0, "rebalance_timeout_s": 4.0, "demo_mode": True,
    } | changes


class LocalServices:
    """Starts ``faust worker`` and the audit writer with ``overrides`` as RISKSTREAM_* variables, logging at ``log_level``."""

    def __init__(self, overrides: dict[str, Any], logs: Path, workers: int = 1, log_level: str = "info") -> None:
        self.settings = Settings(**overrides)
        self.env = os.environ | {f"RISKSTREAM_{key.upper()}": str(value) for key, value in overrides.items()}
        self.logs = logs
        self.workers = workers
        self.log_level = log_level
        self.processes: list[subprocess.Popen[bytes]] = []
        self.writer: subprocess.Popen[bytes] | None = None

    def _spawn(self, command: list[str], log_name: str, env: dict[str, str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / log_name).open("ab") as log:
            self.processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))

    def start_writer(self) -> subprocess.Popen[bytes]:
        """Start the audit writer (at start-up, or again after :meth:`kill_writer`)."""
        self._spawn([sys.executable, "-m", "stream", "-l", self.log_level, "audit-writer"], "audit-writer.log", self.env)
        self.writer = self.processes[-1]
        return self.writer

    def kill_writer(self, sig: int = signal.SIGKILL) -> None:
        """Kill the audit writer as a crash would (SIGKILL: no flush, no commit) and wait until it is gone."""
        assert self.writer is not None, "the audit writer is not running"
        self.writer.send_signal(sig)
        self.writer.wait()
        self.processes.remove(self.writer)
        self.writer = None

    def start(self) -> LocalServices:
        python = sys.executable
        self.start_writer()
        for index in range(self.workers):
            data_dir = self.settings.data_dir / f"worker-{index}"
            data_dir.mkdir(parents=True, exist_ok=True)
            env = self.env | {"RISKSTREAM_WEB_PORT": str(self.settings.web_port + index), "RISKSTREAM_DATA_DIR": str(data_dir)}
            self._spawn([python, "-m", "faust", "-A", "stream.app", "worker", "-l", self.log_level], f"worker-{index}.log", env)
        return self

    def check_alive(self) -> None:
        """Raise if a service has exited: its log says why."""
        for process in self.processes:
            if process.poll() is not None:
                raise StreamError(f"{' '.join(map(str, process.args))} exited with status {process.returncode}; see {self.logs}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def decisions_stored(self) -> int:
        """Decisions visible to analysts so far (0 before the store's first export)."""
        try:
            return int(query(self.settings.audit_dir, "SELECT count(*) FROM decisions").column(0)[0].as_py())
        except Exception:  # noqa: BLE001 - the store may not exist yet while the writer starts
            return 0

    def wait_for_decisions(self, expected: int, timeout_s: float, on_progress: Any = None) -> int:
        """Poll the audit store until ``expected`` decisions are visible; returns how many are."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            self.check_alive()
            now = self.decisions_stored()
            if on_progress is not None and now > seen:
                on_progress(now - seen)
            seen = now
            if seen >= expected:
                break
            time.sleep(0.5)
        return seen

    def __enter__(self) -> LocalServices:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()


__all__ = ["LocalServices", "isolated_overrides"]
