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
from stream.metrics import scrape
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
        self.worker_processes: dict[int, subprocess.Popen[bytes]] = {}  # running workers by index
        self.writer: subprocess.Popen[bytes] | None = None

    def _spawn(self, command: list[str], log_name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / log_name).open("ab") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start_writer(self) -> subprocess.Popen[bytes]:
        """Start the audit writer (at start-up, or again after :meth:`kill_writer`)."""
        self.writer = self._spawn([sys.executable, "-m", "stream", "-l", self.log_level, "audit-writer"], "audit-writer.log", self.env)
        return self.writer

    def kill_writer(self, sig: int = signal.SIGKILL) -> None:
        """Kill the audit writer as a crash would (SIGKILL: no flush, no commit) and wait until it is gone."""
        assert self.writer is not None, "the audit writer is not running"
        self.writer.send_signal(sig)
        self.writer.wait()
        self.processes.remove(self.writer)
        self.writer = None

    def start(self) -> LocalServices:
        self.start_writer()
        for index in range(self.workers):
            self.start_worker(index)
        return self

    def worker_port(self, index: int) -> int:
        """Web port of worker ``index`` (its /health, /ready and /metrics)."""
        return self.settings.web_port + index

    def start_worker(self, index: int | None = None) -> int:
        """Start worker ``index`` (again, after :meth:`kill_worker`), or a new one joining the group; returns its index.

        A restarted worker keeps its index, so its web port, data folder and log.
        """
        if index is None:
            index = max(self.worker_processes, default=-1) + 1
        if index in self.worker_processes:
            raise StreamError(f"worker {index} is already running")
        data_dir = self.settings.data_dir / f"worker-{index}"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = self.env | {"RISKSTREAM_WEB_PORT": str(self.worker_port(index)), "RISKSTREAM_DATA_DIR": str(data_dir)}
        command = [sys.executable, "-m", "faust", "-A", "stream.app", "worker", "-l", self.log_level]
        self.worker_processes[index] = self._spawn(command, f"worker-{index}.log", env)
        return index

    def kill_worker(self, index: int, how: signal.Signals = signal.SIGKILL) -> None:
        """Stop worker ``index``: SIGKILL (a crash: nothing flushed, no goodbye to the group) or SIGTERM (a
        clean leave); waits until it has exited."""
        process = self.worker_processes.pop(index)
        process.send_signal(how)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.processes.remove(process)

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
        self.worker_processes.clear()

    def wait_until_ready(self, timeout_s: float) -> None:
        """Wait until every running worker answers /ready with 200 in one round (model loaded, partitions owned,
        no rebalance going on)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            waiting = [index for index in self.worker_processes if not self.is_ready(index)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise StreamError(f"worker(s) {waiting} not ready within {timeout_s:.0f} s; see {self.logs}")
            time.sleep(0.5)

    def is_ready(self, index: int) -> bool:
        """Whether worker ``index`` answers /ready with 200: model loaded, partitions owned, no rebalance going on."""
        try:
            scrape(self.worker_port(index), path="/ready", timeout_s=2.0)
        except OSError:  # refused while starting, 503 while not ready
            return False
        return True

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
