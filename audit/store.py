"""The single audit writer: idempotent inserts into DuckDB, exported as Parquet segments for readers.

DuckDB lets one process write a file or many read it, never both; so the writer alone opens ``writer.duckdb``,
and after a flush (at most every ``export_interval_s``) it exports the rows added since into the segment files
under ``segments/`` (see ``audit.segments``). Readers query views over those files and never touch the
writer's file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from audit.exceptions import AuditError, StoreLockedError
from audit.schema import (
    DECISION_KEYS,
    PRIMARY_KEYS,
    SEGMENTS_DIR,
    TABLES,
    TX_KEY,
    add_columns_sql,
    conform_decisions,
    create_table_sql,
    decision_table,
    label_table,
    model_tables,
)
from audit.segments import Segments
from audit.views import view_statements

__all__ = ["CATALOG_DB", "WRITER_DB", "AuditStore", "FlushResult", "PruneResult"]

logger = logging.getLogger(__name__)

WRITER_DB = "writer.duckdb"
CATALOG_DB = "catalog.duckdb"
_LOCK_FILE = "writer.lock"
# Reasons before decisions: a reader that sees a decision also sees its reasons; models before their decisions.
_EXPORT_ORDER = ("models", "reference_bins", "reasons", "labels", "decisions")


def _first_copies(batch: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """The rows of ``batch`` that are the first (lowest ``ord``) of their key; ``ord`` dropped."""
    first = batch.select([*key, "ord"]).group_by(list(key), use_threads=False).aggregate([("ord", "min")]).column("ord_min")
    if len(first) < batch.num_rows:
        batch = batch.filter(pc.is_in(batch.column("ord"), first))
    return batch.drop_columns(["ord"])


def _no_rows() -> dict[str, list[pa.Table]]:
    return {table: [] for table in TABLES}


# Small tables: the primary key ignores a key already stored.
_INSERTS = {
    table: f"INSERT INTO {table} BY NAME SELECT *, $seq AS seq{extra} FROM batch_{table} ON CONFLICT DO NOTHING"
    for table, extra in (("labels", f", {TX_KEY} AS tx_key"), ("models", ""), ("reference_bins", ""))
}
# Decisions: the keys table records which keys this flush added (see schema.DECISION_KEYS). Usually all of
# them are new, and every row goes in; after a replay, only the rows (and reasons) whose key this flush added.
_NEW_KEYS = f"INSERT INTO {DECISION_KEYS} SELECT tx_id, $seq FROM batch_decisions ON CONFLICT DO NOTHING"
_ONLY_NEW = f"WHERE tx_id IN (SELECT tx_id FROM {DECISION_KEYS} WHERE seq = $seq)"
_INSERT_DECISIONS = (
    f"INSERT INTO decisions BY NAME SELECT * EXCLUDE (reasons), $seq AS seq, {TX_KEY} AS tx_key "
    "FROM batch_decisions {only_new}"
)
# Reasons ranked by |contribution|, largest first; a tie keeps the order the model gave.
_INSERT_REASONS = """
INSERT INTO reasons BY NAME
SELECT tx_id, row_number() OVER (PARTITION BY tx_id ORDER BY abs(r.contribution) DESC, i) AS rank,
       r.feature, r.label, r.value, r.contribution, $seq AS seq
FROM (
    SELECT tx_id, unnest(reasons) AS r, generate_subscripts(reasons, 1) AS i
    FROM (SELECT tx_id, reasons FROM batch_decisions {only_new}) WHERE len(reasons) > 0
)
"""


@dataclass(frozen=True)
class FlushResult:
    """What one flush did: rows inserted, copies ignored as duplicates, and rows exported for readers."""

    decisions_inserted: int
    decisions_duplicate: int
    labels_inserted: int
    labels_duplicate: int
    exported_rows: int


@dataclass(frozen=True)
class PruneResult:
    """Rows a retention run deleted, and the segment files it rewrote."""

    decisions: int
    reasons: int
    labels: int
    segments_rewritten: int


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
    """The writer's connection, on one thread: a flush's batches are small, and measured on a shared 2-core
    machine more threads cost more CPU in coordination than they saved (bench/audit_writer.py: 49k → 55k
    decisions per CPU second, 34k → 45k per wall second, with one).

    Checkpoints every 64 MB of write-ahead log instead of DuckDB's 16 MB (about two flushes of decisions with
    their sequences): fewer of them cost less in all (the writer's path of bench/audit_writer.py, 200,000
    decisions, best of two runs: 37k → 46k decisions per CPU second); the price is a longer log to replay
    after a crash, up to 64 MB."""
    try:
        return duckdb.connect(str(path), config={"threads": 1, "checkpoint_threshold": "64MB"})
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise StoreLockedError(f"another process holds {path}: {exc}") from exc
        raise AuditError(f"cannot open {path}: {exc}") from exc


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
    export_in_background:
        A flush only starts its export, on a thread of its own: the long-running writer then decodes and
        inserts the next rows while DuckDB writes the segments (bench/audit_writer.py). A flush that finds an
        export still running leaves the next one for a later flush; ``export``, ``prune`` and ``close`` wait
        for it. Off, a flush returns once its export is written (``exported_rows``).
    segment_rows, segment_open_s:
        A segment file is rewritten by each export until it holds this many rows or has been open this long:
        a query over a few large files is several times faster than over hundreds of small ones
        (bench/audit_query.py), and an export rewrites at most ``segment_rows`` rows.

    >>> import tempfile
    >>> with AuditStore(tempfile.mkdtemp(), export_interval_s=0) as store:
    ...     store.add_labels([{"tx_id": "t1", "is_fraud": True, "source": "chargeback", "reported_at": 0}] * 2)
    ...     store.flush()
    FlushResult(decisions_inserted=0, decisions_duplicate=0, labels_inserted=1, labels_duplicate=1, exported_rows=1)
    """

    def __init__(
        self,
        root: str | Path,
        export_interval_s: float = 10.0,
        segment_rows: int = 250_000,
        segment_open_s: float = 86_400.0,
        export_in_background: bool = False,
    ) -> None:
        if export_interval_s < 0:
            raise ValueError(f"export_interval_s must be >= 0, got {export_interval_s}")
        self.root = Path(root).absolute()
        self.export_interval_s = export_interval_s
        self._mutex = threading.Lock()
        self._pending = _no_rows()
        self._ord = 0  # the next buffered row's place: the first copy of a key wins
        self._con: duckdb.DuckDBPyConnection | None = None
        self._export_con: duckdb.DuckDBPyConnection | None = None
        self._flusher = ThreadPoolExecutor(1, thread_name_prefix="audit-flush")
        self._flushing: tuple[Future[FlushResult], dict[str, list[pa.Table]]] | None = None  # and its rows
        self._exporter = ThreadPoolExecutor(1, thread_name_prefix="audit-export") if export_in_background else None
        self._exporting: Future[int] | None = None
        self._export_mutex = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.root / _LOCK_FILE)
        try:
            self._con = _connect_writer(self.root / WRITER_DB)
            for table in (*TABLES, DECISION_KEYS):
                self._con.execute(create_table_sql(table))
            self._add_columns()
            self._export_con = self._con.cursor()  # the export's own connection: it may run beside an insert
            self._segments = {
                table: Segments(self._export_con, self.root / SEGMENTS_DIR / table, table, segment_rows, segment_open_s)
                for table in TABLES
            }
            exported = [segments.open() for segments in self._segments.values()]
            for segments in self._segments.values():
                segments.rewrite_outdated()
            stored = [self._scalar(f"SELECT coalesce(max(seq), 0) FROM {table}") for table in TABLES]
            self._seq = max(*stored, *exported)
            self._models = {version for (version,) in self._con.execute("SELECT model_version FROM models").fetchall()}
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
        if records:
            self._buffer("decisions", decision_table(records))

    def add_decision_table(self, table: pa.Table) -> None:
        """Buffer a batch of decisions already in Arrow form (e.g. decoded from Avro in one go); all or none."""
        if table.num_rows:
            self._buffer("decisions", conform_decisions(table))

    def add_labels(self, labels: Iterable[Mapping]) -> None:
        """Buffer feedback labels, stamped with the time they arrive here (UTC); all or none."""
        records = list(labels)
        if records:
            self._buffer("labels", label_table(records, datetime.now(timezone.utc)))

    def add_model(self, version: str, reference: Mapping) -> None:
        """Record a model version's feature names and training-data bins (``models.reference`` profile).

        A version already recorded is ignored; see :meth:`has_model`.
        """
        models, bins = model_tables(version, reference, datetime.now(timezone.utc))
        with self._mutex:
            self._writer()
            self._append("models", models)
            self._append("reference_bins", bins)
            self._models.add(version)

    def has_model(self, version: str) -> bool:
        """Whether ``version``'s feature names are recorded (or buffered)."""
        return version in self._models

    def flush(self) -> FlushResult:
        """Insert everything buffered in one transaction, then export if the freshness bound is due.

        Once this returns, the rows are durable (commit Kafka offsets after it). On a database error nothing is
        inserted, the rows stay buffered, and AuditError is raised. An export failure after the commit is logged
        and retried at the next flush: it delays readers but loses nothing.
        """
        return self.flush_in_background().result()

    def flush_in_background(self) -> Future[FlushResult]:
        """Start :meth:`flush` on the store's flush thread and return at once: the writer decodes its next poll
        while DuckDB inserts this one (DuckDB and polars let go of the GIL). Rows added from now on belong to
        the next flush, which first waits for this one, so flushes keep their order. The rows are durable once
        the future has its result; should it fail, they are buffered again, ahead of the rows added since.
        """
        with self._mutex:
            self._writer()
            self._wait_for_flush()
            pending = self._take_pending()
            future = self._flusher.submit(self._flush_rows, pending)
            self._flushing = (future, pending)
            return future

    def export_if_due(self) -> int:
        """Export (or start exporting, in the background) once ``export_interval_s`` has passed since the last
        export: a writer calls this while idle, so that its last flushed rows reach the readers too."""
        with self._mutex:
            self._writer()
            if self._exporter is None:
                self._wait_for_flush()  # an export on this thread must not run beside the flush thread's
            return self._export_if_due()

    def export(self) -> int:
        """Export every committed row not yet in a segment, now; returns the number of rows exported."""
        with self._mutex:
            self._writer()
            self._wait_for_flush()
            self._wait_for_export()
            return self._export()

    def prune(self, older_than_days: float, now: datetime | None = None) -> PruneResult:
        """Delete decisions (with their reasons) by event time and labels by report time older than the cutoff.

        Buffered rows are flushed first; the segments holding deleted rows are rewritten, so readers stop seeing
        them at once.
        """
        if older_than_days <= 0:
            raise ValueError(f"older_than_days must be > 0, got {older_than_days}")
        cutoff = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(tzinfo=None)
        params = {"cutoff": cutoff - timedelta(days=older_than_days)}
        old_decisions = "SELECT tx_id FROM decisions WHERE event_time < $cutoff"
        targets = {
            "reasons": f"tx_id IN ({old_decisions})",
            DECISION_KEYS: f"tx_id IN ({old_decisions})",
            "decisions": "event_time < $cutoff",
            "labels": "reported_at < $cutoff",
        }
        with self._mutex:
            con = self._writer()
            self._store_and_export_here()
            deleted, seqs = {}, {}
            try:
                con.begin()
                for table, condition in targets.items():  # decisions last: the others find theirs by its time
                    if table in self._segments:
                        seqs[table] = {seq for (seq,) in con.execute(f"SELECT DISTINCT seq FROM {table} WHERE {condition}", params).fetchall()}
                    deleted[table] = self._scalar(f"DELETE FROM {table} WHERE {condition}", params)
                con.commit()
                rewritten = sum(self._segments[table].rewrite(table_seqs) for table, table_seqs in seqs.items())
            except (duckdb.Error, OSError) as exc:
                with contextlib.suppress(duckdb.Error):
                    con.rollback()
                raise AuditError(f"audit retention failed: {exc}") from exc
        logger.info("audit retention: deleted %s, rewrote %d segment(s)", deleted, rewritten)
        return PruneResult(deleted["decisions"], deleted["reasons"], deleted["labels"], rewritten)

    def close(self) -> None:
        """Flush, export and release the store, even when that last flush fails; a second close does nothing."""
        with self._mutex:
            if self._con is None:
                return
            try:
                self._store_and_export_here()
            finally:
                self._release()

    def _add_columns(self) -> None:
        """Give tables created by an older version the columns added since."""
        con = self._writer()
        for table in TABLES:
            existing = {name for (name,) in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = $table", {"table": table}).fetchall()}
            statements = add_columns_sql(table, existing)
            for statement in statements:
                con.execute(statement)
            if statements:
                logger.warning("audit store: upgraded the %s table: %s", table, "; ".join(statements))

    def _buffer(self, table: str, batch: pa.Table) -> None:
        with self._mutex:
            self._writer()
            self._append(table, batch)

    def _append(self, table: str, batch: pa.Table) -> None:
        """Buffer ``batch`` with ``ord``, each row's place among the buffered rows (the first copy wins)."""
        self._pending[table].append(batch.append_column("ord", pa.array(range(self._ord, self._ord + batch.num_rows), pa.int64())))
        self._ord += batch.num_rows

    def _take_pending(self) -> dict[str, list[pa.Table]]:
        pending, self._pending = self._pending, _no_rows()
        return pending

    def _wait_for_flush(self) -> None:
        """Let the flush in flight finish; a failed one's rows are buffered again, first (its caller has the error)."""
        if self._flushing is None:
            return
        future, rows = self._flushing
        self._flushing = None
        if future.exception() is not None:
            self._buffer_again(rows)

    def _buffer_again(self, rows: dict[str, list[pa.Table]]) -> None:
        for table, batches in rows.items():
            self._pending[table][:0] = batches

    def _store_and_export_here(self) -> None:
        """Let the flush and export in flight finish, then insert what is buffered and export it all, on this
        thread (before a retention run or closing); rows whose insert fails stay buffered."""
        self._wait_for_flush()
        pending = self._take_pending()
        try:
            self._insert(pending)
        except BaseException:
            self._buffer_again(pending)
            raise
        self._wait_for_export()
        self._export()

    def _flush_rows(self, pending: dict[str, list[pa.Table]]) -> FlushResult:
        """One flush, on the flush thread: insert ``pending``, then export if due."""
        counts = self._insert(pending)
        return FlushResult(*counts, exported_rows=self._export_if_due())

    def _writer(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise AuditError(f"the audit store at {self.root} is closed")
        return self._con

    def _scalar(self, sql: str, parameters: Mapping[str, object] | None = None) -> int:
        row = self._writer().execute(sql, parameters).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _release(self) -> None:
        self._flusher.shutdown(wait=True)
        if self._exporter is not None:
            self._exporter.shutdown(wait=True)
        if self._export_con is not None:
            self._export_con.close()
            self._export_con = None
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1

    def _insert(self, pending: dict[str, list[pa.Table]]) -> tuple[int, int, int, int]:
        """Insert ``pending`` as flush number ``seq + 1``: (decisions inserted, duplicate, labels inserted, dup.)."""
        con = self._writer()
        buffered = {table: sum(b.num_rows for b in batches) for table, batches in pending.items()}
        if not any(buffered.values()):
            return 0, 0, 0, 0
        seq = self._seq + 1
        inserted = dict.fromkeys(TABLES, 0)
        try:
            con.begin()
            batch_rows = {}
            for table, batches in pending.items():
                if batches:
                    batch = _first_copies(pa.concat_tables(batches), PRIMARY_KEYS[table])
                    con.register(f"batch_{table}", batch)
                    batch_rows[table] = batch.num_rows
            if buffered["decisions"]:
                new = self._scalar(_NEW_KEYS, {"seq": seq})
                only_new = "" if new == batch_rows["decisions"] else _ONLY_NEW
                inserted["decisions"] = self._scalar(_INSERT_DECISIONS.format(only_new=only_new), {"seq": seq})
                self._scalar(_INSERT_REASONS.format(only_new=only_new), {"seq": seq})
            for table, insert in _INSERTS.items():
                if buffered[table]:
                    inserted[table] = self._scalar(insert, {"seq": seq})
            con.commit()
        except BaseException as exc:
            with contextlib.suppress(duckdb.Error):
                con.rollback()
            if isinstance(exc, duckdb.Error):
                raise AuditError(f"audit flush failed, {buffered} rows stay buffered: {exc}") from exc
            raise
        finally:
            for table in TABLES:
                con.unregister(f"batch_{table}")
        self._seq = seq
        return (
            inserted["decisions"],
            buffered["decisions"] - inserted["decisions"],
            inserted["labels"],
            buffered["labels"] - inserted["labels"],
        )

    def _export_if_due(self) -> int:
        """Export now, or start a background export unless one runs; both the flush thread and the writer's
        idle loop call this, hence the lock."""
        with self._export_mutex:
            if time.monotonic() - self._last_export < self.export_interval_s:
                return 0
            if self._exporter is None:
                return self._export_logging_failure(self._seq)
            if self._exporting is None or self._exporting.done():
                self._exporting = self._exporter.submit(self._export_logging_failure, self._seq)
            return 0

    def _wait_for_export(self) -> None:
        """Let a background export finish (its failure is logged; the next export retries its rows)."""
        with self._export_mutex:
            if self._exporting is not None:
                self._exporting.result()
                self._exporting = None

    def _export_logging_failure(self, last_seq: int) -> int:
        """:meth:`_export` from a flush: a failure is logged and retried by the next export; nothing is lost."""
        try:
            return self._export(last_seq)
        except AuditError:
            logger.exception("audit export failed; retrying at the next flush")
            return 0

    def _export(self, last_seq: int | None = None) -> int:
        """Export each table's rows flushed since its last export, up to flush ``last_seq`` (default: the
        latest); returns the rows exported."""
        last_seq = self._seq if last_seq is None else last_seq
        try:
            total = sum(self._segments[table].export(last_seq) for table in _EXPORT_ORDER)
        except (duckdb.Error, OSError) as exc:
            raise AuditError(f"audit export to {self.root / SEGMENTS_DIR} failed: {exc}") from exc
        self._last_export = time.monotonic()
        return total

    def _write_catalog(self) -> None:
        """Rebuild ``catalog.duckdb`` (views only) under a temp name, so analysts holding the old one keep it."""
        final = self.root / CATALOG_DB
        tmp = final.with_name(final.name + ".tmp")
        for stale in (tmp, tmp.with_name(tmp.name + ".wal")):
            stale.unlink(missing_ok=True)
        with duckdb.connect(str(tmp)) as con:
            for statement in view_statements(self.root):
                con.execute(statement)
        os.replace(tmp, final)
