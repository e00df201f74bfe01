"""The single audit writer: idempotent inserts into DuckDB, exported as immutable Parquet segments for readers.

DuckDB lets one process write a file or many read it, never both; so the writer alone opens ``writer.duckdb``,
and after a flush (at most every ``export_interval_s``) it copies the rows added since the last export into a
new segment file under ``segments/``. Readers query views over those files and never touch the writer's file.

Every row carries ``seq``, the number of the flush that inserted it. A segment is named after the first and
last ``seq`` it holds and appears atomically (written under a temporary name, then renamed), so the highest
``last_seq`` among the file names *is* the export bookkeeping: after a crash the writer resumes from there,
and a repeated export writes the same name again rather than a second copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

import duckdb
import pyarrow as pa

from audit.exceptions import AuditError, StoreLockedError
from audit.schema import (
    PRIMARY_KEYS,
    REASON_COLUMNS,
    SEGMENTS_DIR,
    TABLES,
    create_table_sql,
    decision_batches,
    label_batch,
    segment_name,
    segment_range,
    sql_string,
    view_statements,
)

__all__ = ["CATALOG_DB", "WRITER_DB", "AuditStore", "FlushResult"]

logger = logging.getLogger(__name__)

WRITER_DB = "writer.duckdb"
CATALOG_DB = "catalog.duckdb"
_LOCK_FILE = "writer.lock"
_TMP_SUFFIX = ".tmp"
# Reasons before decisions: a reader that sees a decision also sees its reasons.
_EXPORT_ORDER = ("reasons", "labels", "decisions")


def _insert_first_copies(table: str) -> str:
    """Insert a buffered batch, keeping the first copy of each key in the batch and ignoring keys already stored."""
    key = ", ".join(PRIMARY_KEYS[table])
    return (
        f"INSERT INTO {table} BY NAME SELECT * EXCLUDE (ord), $seq AS seq FROM batch_{table} "
        f"WHERE ord IN (SELECT min(ord) FROM batch_{table} GROUP BY {key}) ON CONFLICT DO NOTHING"
    )


_INSERT_DECISIONS = _insert_first_copies("decisions")
_INSERT_LABELS = _insert_first_copies("labels")
# Only the reasons of the copy just inserted: not of a later copy in the batch, nor of a decision stored before.
_INSERT_REASONS = (
    f"INSERT INTO reasons BY NAME SELECT {', '.join('r.' + c.name for c in REASON_COLUMNS)}, $seq AS seq "
    "FROM batch_reasons AS r "
    "JOIN (SELECT tx_id, min(ord) AS ord FROM batch_decisions GROUP BY tx_id) AS kept "
    "ON kept.tx_id = r.tx_id AND kept.ord = r.ord "
    "WHERE r.tx_id IN (SELECT tx_id FROM decisions WHERE seq = $seq)"
)


@dataclass(frozen=True)
class FlushResult:
    """What one flush did: rows inserted, copies ignored as duplicates, and rows exported for readers."""

    decisions_inserted: int
    decisions_duplicate: int
    labels_inserted: int
    labels_duplicate: int
    exported_rows: int


def _lock(path: Path) -> int:
    """Take the writer lock; DuckDB's own file lock does not stop a second writer inside the same process."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise StoreLockedError(f"another audit writer holds {path}") from exc
    return fd


def _connect_writer(path: Path) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path))
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise StoreLockedError(f"another process holds {path}: {exc}") from exc
        raise AuditError(f"cannot open {path}: {exc}") from exc


def _atomic_replace(tmp: Path, final: Path) -> None:
    """Make ``tmp`` durable, then give it its final name, so a name that exists always has its whole file."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


class AuditStore:
    """The audit writer: buffer decisions and labels, flush them in one transaction, export segments for readers.

    Decisions are idempotent by ``tx_id`` (a replayed copy is ignored and counted), labels by ``(tx_id, source,
    reported_at, is_fraud)``. Thread-safe; only one store may be open per ``root``, in any process.

    Parameters
    ----------
    root:
        Directory of the store; created if missing.
    export_interval_s:
        Freshness bound for readers: a flush exports when this long has passed since the last export
        (0: every flush).

    >>> import tempfile
    >>> with AuditStore(tempfile.mkdtemp(), export_interval_s=0) as store:
    ...     store.add_labels([{"tx_id": "t1", "is_fraud": True, "source": "chargeback", "reported_at": 0}] * 2)
    ...     store.flush()
    FlushResult(decisions_inserted=0, decisions_duplicate=0, labels_inserted=1, labels_duplicate=1, exported_rows=1)
    """

    def __init__(self, root: str | Path, export_interval_s: float = 10.0) -> None:
        if export_interval_s < 0:
            raise ValueError(f"export_interval_s must be >= 0, got {export_interval_s}")
        self.root = Path(root).absolute()
        self.export_interval_s = export_interval_s
        self._mutex = threading.Lock()
        self._pending: dict[str, list[pa.Table]] = {table: [] for table in TABLES}
        self._con: duckdb.DuckDBPyConnection | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.root / _LOCK_FILE)
        try:
            self._con = _connect_writer(self.root / WRITER_DB)
            for table in TABLES:
                self._con.execute(create_table_sql(table))
            self._exported = {table: self._prepare_segments(table) for table in TABLES}
            stored = [self._scalar(f"SELECT coalesce(max(seq), 0) FROM {table}") for table in TABLES]
            self._seq = max(*stored, *self._exported.values())
            self._write_catalog()
            self._export()  # rows committed before a crash but never exported
        except BaseException as exc:
            self._release()
            if isinstance(exc, duckdb.Error):
                raise AuditError(f"cannot open the audit store at {self.root}: {exc}") from exc
            raise

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def add_decisions(self, decisions: Iterable[Mapping]) -> None:
        """Buffer decoded ``Decision`` records until the next flush; all or none (InvalidRecordError names one)."""
        records = list(decisions)
        if not records:
            return
        with self._mutex:
            self._writer()
            ords = sum(batch.num_rows for batch in self._pending["decisions"])
            batch, reasons = decision_batches(records, first_ord=ords)
            self._pending["decisions"].append(batch)
            self._pending["reasons"].append(reasons)

    def add_labels(self, labels: Iterable[Mapping]) -> None:
        """Buffer feedback labels, stamped with the time they arrive here (UTC); all or none."""
        records = list(labels)
        if not records:
            return
        received_at = datetime.now(timezone.utc)
        with self._mutex:
            self._writer()
            ords = sum(batch.num_rows for batch in self._pending["labels"])
            self._pending["labels"].append(label_batch(records, ords, received_at))

    def flush(self) -> FlushResult:
        """Insert everything buffered in one transaction, then export if the freshness bound is due.

        Once this returns, the rows are durable (commit Kafka offsets after it). On a database error nothing is
        inserted, the rows stay buffered, and AuditError is raised. An export failure after the commit is logged
        and retried at the next flush: it delays readers but loses nothing.
        """
        with self._mutex:
            counts = self._insert_pending()
            exported = 0
            if time.monotonic() - self._last_export >= self.export_interval_s:
                try:
                    exported = self._export()
                except AuditError:
                    logger.exception("audit export failed; retrying at the next flush")
            return FlushResult(*counts, exported_rows=exported)

    def export(self) -> int:
        """Export every committed row not yet in a segment, now; returns the number of rows exported."""
        with self._mutex:
            self._writer()
            return self._export()

    def close(self) -> None:
        """Flush, export and release the store, even when that last flush fails; a second close does nothing."""
        with self._mutex:
            if self._con is None:
                return
            try:
                self._insert_pending()
                self._export()
            finally:
                self._release()

    def _writer(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise AuditError(f"the audit store at {self.root} is closed")
        return self._con

    def _scalar(self, sql: str, parameters: Mapping[str, object] | None = None) -> int:
        row = self._writer().execute(sql, parameters).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _release(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1

    def _insert_pending(self) -> tuple[int, int, int, int]:
        """Insert the buffers as flush number ``seq + 1``: (decisions inserted, duplicate, labels inserted, dup.)."""
        con = self._writer()
        buffered = {table: sum(b.num_rows for b in batches) for table, batches in self._pending.items()}
        if not buffered["decisions"] and not buffered["labels"]:
            return 0, 0, 0, 0
        seq = self._seq + 1
        inserted = {"decisions": 0, "labels": 0}
        try:
            con.begin()
            for table, batches in self._pending.items():
                if batches:
                    con.register(f"batch_{table}", pa.concat_tables(batches))
            if buffered["decisions"]:
                inserted["decisions"] = self._scalar(_INSERT_DECISIONS, {"seq": seq})
                self._scalar(_INSERT_REASONS, {"seq": seq})
            if buffered["labels"]:
                inserted["labels"] = self._scalar(_INSERT_LABELS, {"seq": seq})
            con.commit()
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                con.rollback()
            raise AuditError(f"audit flush failed, {buffered} rows stay buffered: {exc}") from exc
        finally:
            for table in TABLES:
                con.unregister(f"batch_{table}")
        self._seq = seq
        self._pending = {table: [] for table in TABLES}
        return (
            inserted["decisions"],
            buffered["decisions"] - inserted["decisions"],
            inserted["labels"],
            buffered["labels"] - inserted["labels"],
        )

    def _segments(self, table: str) -> Path:
        return self.root / SEGMENTS_DIR / table

    def _prepare_segments(self, table: str) -> int:
        """Drop temp files a crash left, write the empty seed segment views need, return the last exported seq."""
        directory = self._segments(table)
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob(f"*{_TMP_SUFFIX}"):
            logger.warning("removing %s, an export interrupted by a crash", leftover)
            leftover.unlink()
        if not (directory / segment_name(0, 0)).exists():
            self._write_segment(table, 0, 0)  # seq starts at 1: a typed file with no rows
        ranges = [segment_range(path.name) for path in directory.iterdir()]
        return max(last for _, last in filter(None, ranges))

    def _write_segment(self, table: str, first_seq: int, last_seq: int) -> None:
        final = self._segments(table) / segment_name(first_seq, last_seq)
        tmp = final.with_name(final.name + _TMP_SUFFIX)
        self._writer().execute(
            f"COPY (SELECT * FROM {table} WHERE seq BETWEEN {first_seq:d} AND {last_seq:d}) "
            f"TO {sql_string(tmp)} (FORMAT parquet, COMPRESSION zstd)"
        )
        _atomic_replace(tmp, final)

    def _export(self) -> int:
        """Write one segment per table of the rows with ``seq`` above its last export; returns rows exported."""
        total = 0
        try:
            for table in _EXPORT_ORDER:
                row = (
                    self._writer()
                    .execute(
                        f"SELECT min(seq), max(seq), count(*) FROM {table} WHERE seq > $after",
                        {"after": self._exported[table]},
                    )
                    .fetchone()
                )
                first_seq, last_seq, rows = row if row else (None, None, 0)
                if rows:
                    self._write_segment(table, first_seq, last_seq)
                    self._exported[table] = last_seq
                    total += rows
                    logger.debug("exported %d %s rows, seq %d..%d", rows, table, first_seq, last_seq)
        except (duckdb.Error, OSError) as exc:
            raise AuditError(f"audit export to {self.root / SEGMENTS_DIR} failed: {exc}") from exc
        self._last_export = time.monotonic()
        return total

    def _write_catalog(self) -> None:
        """Rebuild ``catalog.duckdb`` (views only) under a temp name, so analysts holding the old one keep it."""
        final = self.root / CATALOG_DB
        tmp = final.with_name(final.name + _TMP_SUFFIX)
        for stale in (tmp, tmp.with_name(tmp.name + ".wal")):
            stale.unlink(missing_ok=True)
        with duckdb.connect(str(tmp)) as con:
            for statement in view_statements(self.root):
                con.execute(statement)
        _atomic_replace(tmp, final)
