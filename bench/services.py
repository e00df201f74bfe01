"""What the fault scripts read of a running worker: its memory and its lag."""

from __future__ import annotations

from pathlib import Path

from stream.metrics import sample_total, scrape


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_lag(port: int) -> float:
    """The worker's consumer lag over all its partitions, from its /metrics page (NaN when it does not answer)."""
    try:
        return sample_total(scrape(port, timeout_s=5.0), "riskstream_consumer_lag")
    except OSError:
        return float("nan")
