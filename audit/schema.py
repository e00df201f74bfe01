"""The audit store's one description of its data: columns, DDL, Arrow conversion, segment files and views.

The writer (``audit.store``) and the readers (``audit.reader``, ``catalog.duckdb``) both build on this module,
so a column is declared once and the DuckDB table, the Arrow batch and the analysts' views cannot drift apart.

Layout of a store root::

    writer.duckdb                 the writer's database, the source of truth (one writer process only)
    writer.lock                   held by the running writer
    catalog.duckdb                views only, for the duckdb CLI or ``duckdb.connect(path, read_only=True)``
    segments/<table>/<first_seq>-<last_seq>.parquet   immutable exports that every view reads

Times are stored as ``TIMESTAMP`` holding UTC; ``features`` is a ``MAP(VARCHAR, DOUBLE)`` (Arrow ``map<string,
double>``, kept as a map in Parquet too).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import pyarrow as pa

from audit.exceptions import InvalidRecordError

__all__ = [
    "DECISION_COLUMNS",
    "LABEL_COLUMNS",
    "PRIMARY_KEYS",
    "REASON_COLUMNS",
    "SEGMENTS_DIR",
    "TABLES",
    "Column",
    "create_table_sql",
    "decision_batches",
    "label_batch",
    "segment_name",
    "segment_range",
    "sql_string",
    "view_statements",
]

SEGMENTS_DIR = "segments"
_SEGMENT_RE = re.compile(r"^(\d{12})-(\d{12})\.parquet$")
_TS = pa.timestamp("ms")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Column:
    """One column, as DuckDB stores it and as the Arrow batch carries it; required columns may not be null."""

    name: str
    sql: str
    arrow: pa.DataType
    required: bool = True


DECISION_COLUMNS: tuple[Column, ...] = (
    Column("tx_id", "VARCHAR", pa.string()),
    Column("event_time", "TIMESTAMP", _TS),
    Column("card_id", "VARCHAR", pa.string(), required=False),
    Column("terminal_id", "VARCHAR", pa.string(), required=False),
    Column("amount", "DOUBLE", pa.float64()),
    Column("score", "DOUBLE", pa.float64()),
    Column("score_logit", "DOUBLE", pa.float64(), required=False),
    Column("threshold", "DOUBLE", pa.float64()),
    Column("is_alert", "BOOLEAN", pa.bool_()),
    Column("model_version", "VARCHAR", pa.string()),
    Column("decided_at", "TIMESTAMP", _TS),
    Column("features", "MAP(VARCHAR, DOUBLE)", pa.map_(pa.string(), pa.float64()), required=False),
    Column("base_value", "DOUBLE", pa.float64(), required=False),
    Column("additivity_gap", "DOUBLE", pa.float64(), required=False),
    Column("explanation_flagged", "BOOLEAN", pa.bool_(), required=False),
)
REASON_COLUMNS: tuple[Column, ...] = (
    Column("tx_id", "VARCHAR", pa.string()),
    Column("rank", "INTEGER", pa.int32()),
    Column("feature", "VARCHAR", pa.string()),
    Column("label", "VARCHAR", pa.string(), required=False),
    Column("value", "DOUBLE", pa.float64(), required=False),
    Column("contribution", "DOUBLE", pa.float64()),
)
LABEL_COLUMNS: tuple[Column, ...] = (
    Column("tx_id", "VARCHAR", pa.string()),
    Column("is_fraud", "BOOLEAN", pa.bool_()),
    Column("source", "VARCHAR", pa.string()),
    Column("reported_at", "TIMESTAMP", _TS),
    Column("received_at", "TIMESTAMP", _TS),
    Column("card_id", "VARCHAR", pa.string(), required=False),
    Column("terminal_id", "VARCHAR", pa.string(), required=False),
)
TABLES: dict[str, tuple[Column, ...]] = {
    "decisions": DECISION_COLUMNS,
    "reasons": REASON_COLUMNS,
    "labels": LABEL_COLUMNS,
}
#: A second row with the same key is ignored: a replayed decision, or a label reported twice.
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "decisions": ("tx_id",),
    "reasons": ("tx_id", "rank"),
    "labels": ("tx_id", "source", "reported_at", "is_fraud"),
}


def create_table_sql(table: str) -> str:
    """DDL for one writer table: its columns plus ``seq``, the flush that inserted the row, which drives export.

    >>> print(create_table_sql("reasons"))  # doctest: +ELLIPSIS
    CREATE TABLE IF NOT EXISTS reasons (tx_id VARCHAR NOT NULL, rank INTEGER NOT NULL, ..., PRIMARY KEY (tx_id, rank))
    """
    columns = [f"{c.name} {c.sql}{' NOT NULL' if c.required else ''}" for c in TABLES[table]]
    columns += ["seq BIGINT NOT NULL", f"PRIMARY KEY ({', '.join(PRIMARY_KEYS[table])})"]
    return f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(columns)})"


def _table(columns: Sequence[Column], rows: Sequence[Mapping], ords: Sequence[int]) -> pa.Table:
    """Arrow table of ``rows`` (required keys must be present) plus ``ord``, the row's place in the flush."""
    arrays = []
    for column in columns:
        values = [row[column.name] for row in rows] if column.required else [row.get(column.name) for row in rows]
        array = pa.array(values, type=column.arrow)
        if column.required and array.null_count:
            raise ValueError(f"{column.name} is null")
        arrays.append(array)
    arrays.append(pa.array(ords, type=pa.int64()))
    return pa.Table.from_arrays(arrays, names=[c.name for c in columns] + ["ord"])


def _ranked_reasons(decisions: Sequence[Mapping], first_ord: int) -> tuple[list[dict], list[int]]:
    """Reason rows ranked 1..n by |contribution|, largest first (a stable sort keeps ties as the model gave)."""
    rows: list[dict] = []
    ords: list[int] = []
    for ord_, decision in enumerate(decisions, first_ord):
        reasons = sorted(decision.get("reasons") or (), key=lambda r: abs(r["contribution"]), reverse=True)
        for rank, reason in enumerate(reasons, 1):
            rows.append({**reason, "tx_id": decision["tx_id"], "rank": rank})
            ords.append(ord_)
    return rows, ords


_CONVERSION_ERRORS = (KeyError, TypeError, ValueError, AttributeError)


def _all_or_nothing(kind: str, convert: Callable[[Sequence[Mapping]], _T], records: Sequence[Mapping]) -> _T:
    """``convert(records)``, or InvalidRecordError naming the first record that fails on its own."""
    try:
        return convert(records)
    except _CONVERSION_ERRORS as exc:
        for index, record in enumerate(records):
            try:
                convert([record])
            except _CONVERSION_ERRORS as bad:
                tx_id = record.get("tx_id") if isinstance(record, Mapping) else None
                raise InvalidRecordError(f"{kind} #{index} (tx_id={tx_id!r}): {bad!r}") from bad
        raise InvalidRecordError(f"{kind} batch: {exc!r}") from exc


def decision_batches(decisions: Sequence[Mapping], first_ord: int) -> tuple[pa.Table, pa.Table]:
    """Arrow batches (decisions, reasons) of decoded ``Decision`` records, all or nothing.

    Times may be epoch milliseconds or datetimes. ``ord`` numbers the decisions from ``first_ord``; each reason
    carries its decision's ``ord``, so the flush keeps the reasons of the copy it keeps.

    >>> d = {"tx_id": "t1", "event_time": 0, "card_id": "c", "terminal_id": "m", "amount": 9.5, "score": 0.9,
    ...      "score_logit": 2.2, "threshold": 0.5, "is_alert": True, "model_version": "v1", "decided_at": 5,
    ...      "features": {"amount": 9.5}, "base_value": 0.1, "additivity_gap": 0.0,
    ...      "reasons": [{"feature": "f", "label": "F", "value": 1.0, "contribution": 0.1},
    ...                  {"feature": "g", "label": "G", "value": 2.0, "contribution": -0.7}]}
    >>> decisions, reasons = decision_batches([d], first_ord=0)
    >>> decisions.num_rows, reasons.column("feature").to_pylist(), reasons.column("rank").to_pylist()
    (1, ['g', 'f'], [1, 2])
    """

    def convert(records: Sequence[Mapping]) -> tuple[pa.Table, pa.Table]:
        ords = range(first_ord, first_ord + len(records))
        reason_rows, reason_ords = _ranked_reasons(records, first_ord)
        return _table(DECISION_COLUMNS, records, ords), _table(REASON_COLUMNS, reason_rows, reason_ords)

    return _all_or_nothing("decision", convert, decisions)


def label_batch(labels: Sequence[Mapping], first_ord: int, received_at: datetime) -> pa.Table:
    """Arrow batch of feedback labels, stamped ``received_at``, all or nothing.

    >>> from datetime import datetime, timezone
    >>> label = {"tx_id": "t1", "is_fraud": True, "source": "chargeback", "reported_at": 0}
    >>> label_batch([label], 0, datetime(2026, 1, 1, tzinfo=timezone.utc)).column("received_at")[0]
    <pyarrow.TimestampScalar: '2026-01-01T00:00:00.000'>
    """

    def convert(records: Sequence[Mapping]) -> pa.Table:
        rows = [{**record, "received_at": received_at} for record in records]
        return _table(LABEL_COLUMNS, rows, range(first_ord, first_ord + len(rows)))

    return _all_or_nothing("label", convert, labels)


def segment_name(first_seq: int, last_seq: int) -> str:
    """File name of the segment holding the rows of flushes ``first_seq..last_seq``; the same range, the same name.

    >>> segment_name(3, 17)
    '000000000003-000000000017.parquet'
    """
    return f"{first_seq:012d}-{last_seq:012d}.parquet"


def segment_range(name: str) -> tuple[int, int] | None:
    """``(first_seq, last_seq)`` of a segment file name, or None for any other file (a temp file, say).

    >>> segment_range("000000000003-000000000017.parquet"), segment_range("x.parquet.tmp")
    ((3, 17), None)
    """
    match = _SEGMENT_RE.match(name)
    return (int(match[1]), int(match[2])) if match else None


def sql_string(text: str | Path) -> str:
    """A SQL string literal of ``text`` (a file path, say), quotes doubled.

    >>> sql_string("it's")
    "'it''s'"
    """
    text = str(text)
    return "'" + text.replace("'", "''") + "'"


def view_statements(root: str | Path) -> list[str]:
    """``CREATE VIEW`` statements over the segments of the store at ``root`` (absolute, so the views move nowhere).

    ``decisions_labelled`` joins each decision to its latest label (by ``reported_at``, then arrival).
    ``explanation_drift`` gives, per day (of the transaction's event time) and reason, how many of the day's
    alerts that reason leads (rank 1, the largest |contribution|) and their share of the day's alerts.

    >>> [s.split(" AS ")[0] for s in view_statements("/data/audit")][-3:]
    ['CREATE OR REPLACE VIEW alerts', 'CREATE OR REPLACE VIEW decisions_labelled', 'CREATE OR REPLACE VIEW explanation_drift']
    """
    base = Path(root).absolute() / SEGMENTS_DIR
    statements = [
        f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM "
        f"read_parquet({sql_string(base / table / '*.parquet')}, union_by_name = true)"
        for table in TABLES
    ]
    statements.append("CREATE OR REPLACE VIEW alerts AS SELECT * FROM decisions WHERE is_alert")
    statements.append(
        "CREATE OR REPLACE VIEW decisions_labelled AS "
        "SELECT d.*, l.is_fraud AS label, l.source AS label_source, l.reported_at AS labelled_at "
        "FROM decisions AS d LEFT JOIN ("
        "SELECT * FROM labels QUALIFY row_number() OVER "
        "(PARTITION BY tx_id ORDER BY reported_at DESC, received_at DESC, seq DESC) = 1"
        ") AS l ON l.tx_id = d.tx_id"
    )
    statements.append(
        "CREATE OR REPLACE VIEW explanation_drift AS "
        "SELECT CAST(a.event_time AS DATE) AS day, r.feature AS reason, count(*) AS alerts_led, "
        "any_value(daily.alerts) AS alerts, count(*) / any_value(daily.alerts) AS share "
        "FROM alerts AS a JOIN reasons AS r ON r.tx_id = a.tx_id AND r.rank = 1 "
        "JOIN (SELECT CAST(event_time AS DATE) AS day, count(*) AS alerts FROM alerts GROUP BY ALL) AS daily "
        "ON daily.day = CAST(a.event_time AS DATE) "
        "GROUP BY ALL ORDER BY day, share DESC, reason"
    )
    return statements
