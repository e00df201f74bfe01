"""Analysts' and training's access to the audit store, safe while the writer runs.

Readers never open ``writer.duckdb`` (DuckDB would refuse while the writer holds it): they get an in-memory
connection whose views read the writer's Parquet segments, the same views ``catalog.duckdb`` holds. Data is
as fresh as the writer's last export (its ``export_interval_s``).
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pyarrow as pa

from audit.exceptions import AuditError
from audit.schema import SEGMENTS_DIR, TABLES, segment_name
from audit.views import view_statements

__all__ = ["connect", "query", "run"]

_TORN_READ = ("TProtocolException", "Invalid data", "No such file or directory", "not a parquet file")
"""What DuckDB says when a query read the open segment's footer before the writer replaced the file and its
data after (it opens a file more than once a query): the next attempt reads whole versions again."""
_ATTEMPTS = 4

_READ_ONLY = frozenset(
    {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.PRAGMA}
)


def connect(root: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the store's views (``audit.views.VIEWS``).

    The caller closes it. Writes through it land in memory only, never in the store. Its time zone is UTC, as
    the store's times are, so that ``current_date`` is the day the ``day`` columns name, wherever it runs.

    >>> import tempfile
    >>> from audit.store import AuditStore
    >>> root = tempfile.mkdtemp()
    >>> AuditStore(root).close()
    >>> with connect(root) as con:
    ...     con.sql("SELECT count(*) FROM alerts").fetchall()
    [(0,)]
    """
    root = Path(root).absolute()
    missing = [table for table in TABLES if not (root / SEGMENTS_DIR / table / segment_name(0)).exists()]
    if missing:
        raise AuditError(f"no audit store at {root} (no segments for {', '.join(missing)}): start its writer once")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")  # the store's times are UTC: so are current_date and now() here
        for statement in view_statements(root):
            con.execute(statement)
    except duckdb.Error as exc:
        con.close()
        raise AuditError(f"cannot define the audit views over {root}: {exc}") from exc
    return con


def query(root: str | Path, sql: str) -> pa.Table:
    """Run one read-only statement (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN, PRAGMA) on the store's views.

    >>> import tempfile
    >>> from audit.store import AuditStore
    >>> root = tempfile.mkdtemp()
    >>> AuditStore(root).close()
    >>> query(root, "SELECT count(*) AS n FROM decisions_labelled").column("n").to_pylist()
    [0]
    >>> query(root, "DELETE FROM decisions")
    Traceback (most recent call last):
    ...
    audit.exceptions.AuditError: only one read-only statement is allowed, got DELETE
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise AuditError(f"cannot parse the query: {exc}") from exc
    if len(statements) != 1 or statements[0].type not in _READ_ONLY:
        kinds = ", ".join(statement.type.name for statement in statements) or "nothing"
        raise AuditError(f"only one read-only statement is allowed, got {kinds}")
    with connect(root) as con:
        return run(con, sql)


def run(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object] | None = None) -> pa.Table:
    """Run ``sql`` on a :func:`connect` connection, again when it met a segment file just as the writer replaced
    it (a torn read); any other failure, or the last, raises AuditError."""
    attempt = 1
    while True:
        try:
            return con.sql(sql, params=params).to_arrow_table()
        except duckdb.Error as exc:
            if attempt == _ATTEMPTS or not any(sign in str(exc) for sign in _TORN_READ):
                raise AuditError(f"query failed: {exc}") from exc
        time.sleep(0.05 * attempt)
        attempt += 1
