"""The Parquet segments readers query: each table's rows, exported by the writer, never a file half written.

Every row carries ``seq``, the number of the flush that inserted it. A segment holds the rows of a run of
flushes and is named after the first (``<first_seq>.parquet``). The newest segment stays *open*: each export
rewrites it with the rows added since, under a temporary name that then replaces it in one rename, until it
holds ``max_rows`` rows or has been open ``max_open_s`` seconds; then it is sealed and the next export starts
a new one. So a store gets a few large files instead of one per export (a query over thousands of small files
is slow), and a reader sees each version of a file whole: a query that opened the old version keeps reading
it (POSIX keeps a replaced file's data while it is open). The highest ``seq`` in the newest segment is the
export bookkeeping: after a crash the writer resumes from there. Retention rewrites the segments it deletes
rows from the same way, and removes a segment only once it has been found empty at an earlier pruning.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from audit.exceptions import AuditError
from audit.schema import segment_name, segment_start, sql_string

__all__ = ["Segments"]

logger = logging.getLogger(__name__)

_TMP_SUFFIX = ".tmp"


def _atomic_replace(tmp: Path, final: Path) -> None:
    """Make ``tmp`` durable, then give it its final name, so a name that exists always has its whole file."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


class Segments:
    """One table's segment files, written from the writer's connection ``con``.

    ``open()`` must run first: it removes what a crash left, writes the empty seed segment (``0``) that gives
    the views their types, and returns the last exported ``seq``.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, directory: Path, table: str, max_rows: int, max_open_s: float) -> None:
        self.con = con
        self.directory = directory
        self.table = table
        self.max_rows = max_rows
        self.max_open_s = max_open_s
        self.exported = 0
        self._open: tuple[int, int, float] | None = None  # (first_seq, rows, opened at) of the open segment

    def open(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(f"*{_TMP_SUFFIX}"):
            logger.warning("removing %s, an export interrupted by a crash", leftover)
            leftover.unlink()
        if not (self.directory / segment_name(0)).exists():
            self._write(0, 0)  # seq starts at 1: a typed file with no rows
        newest = max(self.starts())
        if newest:
            path = sql_string(self.directory / segment_name(newest))
            rows, last = self.con.execute(f"SELECT count(*), coalesce(max(seq), 0) FROM read_parquet({path})").fetchone()
            self.exported = max(int(last), newest - 1)
            self._open = (newest, int(rows), time.monotonic())
        return self.exported

    def starts(self) -> list[int]:
        """``first_seq`` of every segment file, ascending."""
        return sorted(start for path in self.directory.iterdir() if (start := segment_start(path.name)) is not None)

    def export(self, last_seq: int) -> int:
        """Write the rows of flushes after the last export up to ``last_seq``; returns how many there were."""
        if last_seq <= self.exported:
            return 0
        (rows,) = self.con.execute(
            f"SELECT count(*) FROM {self.table} WHERE seq > $after AND seq <= $last", {"after": self.exported, "last": last_seq}
        ).fetchone()
        if rows:
            if self._open and self._open[1] < self.max_rows and time.monotonic() - self._open[2] < self.max_open_s:
                first, held, opened = self._open
            else:
                first, held, opened = self.exported + 1, 0, time.monotonic()
            self._write(first, last_seq)
            self._open = (first, held + int(rows), opened)
            logger.debug("exported %d %s rows into segment %d", rows, self.table, first)
        self.exported = last_seq
        return int(rows)

    def rewrite(self, seqs: set[int]) -> int:
        """Rewrite the exported segments holding any of ``seqs`` from the table as it is now (after a delete).

        A sealed segment that was already empty is removed first; one that becomes empty stays, empty, until
        the next call, so a query that listed it a moment ago can still open it. Returns segments rewritten.
        """
        spans = self._spans()
        rewritten = 0
        for index, (first, last) in enumerate(spans):
            path = self.directory / segment_name(first)
            sealed = index + 1 < len(spans)
            if first and sealed and pq.read_metadata(path).num_rows == 0:
                path.unlink()
            elif first and any(first <= seq <= last for seq in seqs):
                self._write(first, last)
                rewritten += 1
        return rewritten

    def rewrite_outdated(self) -> int:
        """Rewrite from the table every segment that lacks some of its columns (added by an upgrade), so that all
        files have them, as the views read them; returns how many. Each file is checked, not the table: an
        upgrade cut short after its columns were added (a crash, a full disk) is finished by the next open."""
        columns = {name for (name,) in self.con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = $table", {"table": self.table}).fetchall()}
        outdated = []
        for first, last in self._spans():
            footer = self._footer(first)
            if columns <= set(footer.schema.to_arrow_schema().names):
                continue
            held = self.con.execute(f"SELECT count(*) FROM {self.table} WHERE seq BETWEEN $first AND $last",
                                    {"first": first, "last": last}).fetchone()[0]  # type: ignore[index]
            if held < footer.num_rows:  # rewriting would drop the rows the table no longer has: refuse, touch nothing
                raise AuditError(f"segment {segment_name(first)} of {self.table} lacks columns that need adding, and the "
                                 f"writer's database holds {held} of its {footer.num_rows} rows (was it replaced?): not rewritten")
            outdated.append((first, last))
        for first, last in outdated:
            self._write(first, last)
        return len(outdated)

    def _footer(self, first_seq: int) -> pq.FileMetaData:
        """A segment file's footer: its columns and row count."""
        path = self.directory / segment_name(first_seq)
        try:
            return pq.read_metadata(path)
        except (pa.ArrowException, OSError) as exc:
            raise AuditError(f"cannot read the segment {path}: {exc}") from exc

    def _spans(self) -> list[tuple[int, int]]:
        """``(first_seq, last_seq)`` of every segment file, ascending; the newest ends at the last export."""
        starts = self.starts()
        return [(first, starts[index + 1] - 1 if index + 1 < len(starts) else self.exported) for index, first in enumerate(starts)]

    def _write(self, first_seq: int, last_seq: int) -> None:
        """Write the rows of flushes ``first_seq..last_seq`` as that segment; zstd level 1 takes a fifth less CPU
        than the default 3 (measured on the decisions, with their sequences, that bench/audit_writer.py stores)."""
        final = self.directory / segment_name(first_seq)
        tmp = final.with_name(final.name + _TMP_SUFFIX)
        self.con.execute(
            f"COPY (SELECT * FROM {self.table} WHERE seq BETWEEN {first_seq:d} AND {last_seq:d}) "
            f"TO {sql_string(tmp)} (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)"
        )
        _atomic_replace(tmp, final)
