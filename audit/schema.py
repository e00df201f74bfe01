"""The audit store's one description of its data: columns, DDL, Arrow conversion and segment file names.

The writer (``audit.store``) and the readers (``audit.views``, ``audit.reader``, ``catalog.duckdb``) build on
this module, so a column is declared once and the DuckDB table, the Arrow batch and the analysts' views cannot
drift apart.

Layout of a store root::

    writer.duckdb                 the writer's database, the source of truth (one writer process only)
    writer.lock                   held by the running writer
    catalog.duckdb                views only, for the duckdb CLI or ``duckdb.connect(path, read_only=True)``
    segments/<table>/<first_seq>.parquet   the exports that every view reads (see ``audit.segments``)

Times are stored as ``TIMESTAMP`` holding UTC. A decision's ``features`` are a ``DOUBLE[]`` in the order of its
model's feature names, which the ``models`` table holds once per model version (a list decodes several times
faster than an Avro map of name to value); the analysts' ``decisions`` view turns them back into a
``MAP(VARCHAR, DOUBLE)``. With ``sequence`` (the card's recent steps, ``FLOAT[]``, as the model read them) they
are the model's whole input, which retraining and replay read back. Columns added later are nullable, and a
store created before them gains them when its writer opens it (:func:`add_columns_sql`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from audit.exceptions import AuditError, InvalidRecordError

__all__ = [
    "DECISION_BATCH_SCHEMA",
    "DECISION_KEYS",
    "DECISION_COLUMNS",
    "LABEL_COLUMNS",
    "MODEL_COLUMNS",
    "PRIMARY_KEYS",
    "REASON_COLUMNS",
    "REFERENCE_COLUMNS",
    "SEGMENTS_DIR",
    "TABLES",
    "TX_KEY",
    "Column",
    "add_columns_sql",
    "conform_decisions",
    "create_table_sql",
    "decision_table",
    "label_table",
    "model_tables",
    "segment_name",
    "segment_start",
    "sql_string",
]

SEGMENTS_DIR = "segments"
_SEGMENT_RE = re.compile(r"^(\d{12})\.parquet$")
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
    Column("features", "DOUBLE[]", pa.list_(pa.float64()), required=False),
    Column("base_value", "DOUBLE", pa.float64(), required=False),
    Column("additivity_gap", "DOUBLE", pa.float64(), required=False),
    Column("explanation_flagged", "BOOLEAN", pa.bool_(), required=False),
    Column("sequence", "FLOAT[]", pa.list_(pa.float32()), required=False),
    Column("batch_id", "BIGINT", pa.int64(), required=False),
    Column("batch_row", "INTEGER", pa.int32(), required=False),
    Column("shadow_model_version", "VARCHAR", pa.string(), required=False),
    Column("shadow_score", "DOUBLE", pa.float64(), required=False),
    Column("shadow_score_logit", "DOUBLE", pa.float64(), required=False),
    Column("shadow_is_alert", "BOOLEAN", pa.bool_(), required=False),
    Column("threshold_logit", "DOUBLE", pa.float64(), required=False),
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
MODEL_COLUMNS: tuple[Column, ...] = (
    Column("model_version", "VARCHAR", pa.string()),
    Column("feature_names", "VARCHAR[]", pa.list_(pa.string())),
    Column("registered_at", "TIMESTAMP", _TS),
)
#: The training data's bins (see ``models.reference``): ``position`` indexes ``features`` (1-based), NULL for
#: the score; a value ``v`` falls in bin ``1 + #(edges <= v)``, whose training share is ``expected[bin]``.
REFERENCE_COLUMNS: tuple[Column, ...] = (
    Column("model_version", "VARCHAR", pa.string()),
    Column("variable", "VARCHAR", pa.string()),
    Column("position", "INTEGER", pa.int32(), required=False),
    Column("edges", "DOUBLE[]", pa.list_(pa.float64())),
    Column("expected", "DOUBLE[]", pa.list_(pa.float64())),
)
TABLES: dict[str, tuple[Column, ...]] = {
    "decisions": DECISION_COLUMNS,
    "reasons": REASON_COLUMNS,
    "labels": LABEL_COLUMNS,
    "models": MODEL_COLUMNS,
    "reference_bins": REFERENCE_COLUMNS,
}
#: A second row with the same key is ignored: a replayed decision, a label reported twice, a model seen again.
#: Reasons need no key of their own: they are inserted only with a decision that is new.
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "decisions": ("tx_id",),
    "labels": ("tx_id", "source", "reported_at", "is_fraud"),
    "models": ("model_version",),
    "reference_bins": ("model_version", "variable"),
}
#: Decisions and labels also carry ``tx_key``, the lower 64 bits of tx_id's MD5, set by the writer: the
#: ``daily`` view joins 10 M decisions to their labels on it about twice as fast as on the tx_id strings
#: (bench/audit_query.py); MD5 does not change between DuckDB versions, as its ``hash()`` may.
TX_KEY = "md5_number_lower(tx_id)"
_WITH_TX_KEY = ("decisions", "labels")
#: Decisions keep their key in a narrow table of their own: DuckDB checks a conflict on a wide row (with its
#: features list) several times slower than on the key alone, and decisions are the one table that is large.
DECISION_KEYS = "decision_keys"
REASONS_TYPE = pa.list_(pa.struct([(c.name, c.arrow) for c in REASON_COLUMNS if c.name not in ("tx_id", "rank")]))
#: What a buffered decision batch holds: the decision columns plus its reasons, nested as in the Avro record.
DECISION_BATCH_SCHEMA = pa.schema([pa.field(c.name, c.arrow) for c in DECISION_COLUMNS] + [("reasons", REASONS_TYPE)])


def create_table_sql(table: str) -> str:
    """DDL for one writer table: its columns plus ``seq``, the flush that inserted the row, which drives export.

    >>> print(create_table_sql("models"))
    CREATE TABLE IF NOT EXISTS models (model_version VARCHAR NOT NULL, feature_names VARCHAR[] NOT NULL, registered_at TIMESTAMP NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (model_version))
    >>> create_table_sql("decision_keys")
    'CREATE TABLE IF NOT EXISTS decision_keys (tx_id VARCHAR PRIMARY KEY, seq BIGINT NOT NULL)'
    """
    if table == DECISION_KEYS:
        return f"CREATE TABLE IF NOT EXISTS {DECISION_KEYS} (tx_id VARCHAR PRIMARY KEY, seq BIGINT NOT NULL)"
    columns = [f"{c.name} {c.sql}{' NOT NULL' if c.required else ''}" for c in TABLES[table]] + ["seq BIGINT NOT NULL"]
    if table in _WITH_TX_KEY:
        columns.append("tx_key UBIGINT NOT NULL")
    if table in PRIMARY_KEYS and table != "decisions":
        columns.append(f"PRIMARY KEY ({', '.join(PRIMARY_KEYS[table])})")
    return f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(columns)})"


def add_columns_sql(table: str, existing: Collection[str]) -> list[str]:
    """``ALTER TABLE`` statements giving ``table``, created by an older version with ``existing`` columns, the
    columns added since; they are all nullable, so old rows read as NULL. A missing required column cannot be
    added (its old rows would have no value): AuditError names it.

    >>> add_columns_sql("labels", ["tx_id", "is_fraud", "source", "reported_at", "received_at", "card_id"])
    ['ALTER TABLE labels ADD COLUMN terminal_id VARCHAR']
    """
    missing = [c for c in TABLES[table] if c.name not in existing]
    required = [c.name for c in missing if c.required]
    if required:
        raise AuditError(f"the stored {table} table lacks required column(s) {required}; it cannot be upgraded")
    return [f"ALTER TABLE {table} ADD COLUMN {c.name} {c.sql}" for c in missing]


def _column_array(column: Column, values: Sequence[object]) -> pa.Array:
    array = pa.array(values, type=column.arrow)
    if column.required and array.null_count:
        raise ValueError(f"{column.name} is null")
    return array


def _table(columns: Sequence[Column], rows: Sequence[Mapping]) -> pa.Table:
    """Arrow table of ``rows`` with exactly ``columns`` (required keys must be present and not null)."""
    arrays = [
        _column_array(c, [row[c.name] for row in rows] if c.required else [row.get(c.name) for row in rows])
        for c in columns
    ]
    return pa.Table.from_arrays(arrays, names=[c.name for c in columns])


_CONVERSION_ERRORS = (KeyError, TypeError, ValueError, AttributeError, pa.ArrowException)


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


def decision_table(decisions: Sequence[Mapping]) -> pa.Table:
    """Arrow batch of decoded ``Decision`` records, reasons nested as the Avro record has them; all or nothing.

    Times may be epoch milliseconds or datetimes; ``features`` is the list of model inputs in the order of the
    model's feature names.

    >>> d = {"tx_id": "t1", "event_time": 0, "card_id": "c", "terminal_id": "m", "amount": 9.5, "score": 0.9,
    ...      "score_logit": 2.2, "threshold": 0.5, "is_alert": True, "model_version": "v1", "decided_at": 5,
    ...      "features": [9.5, 1.0], "base_value": 0.1, "additivity_gap": 0.0,
    ...      "reasons": [{"feature": "f", "label": "F", "value": 1.0, "contribution": 0.1}]}
    >>> table = decision_table([d])
    >>> table.num_rows, table.column("reasons").to_pylist()[0][0]["feature"]
    (1, 'f')
    """

    def convert(records: Sequence[Mapping]) -> pa.Table:
        table = _table(DECISION_COLUMNS, records)
        reasons = pa.array([record.get("reasons") or [] for record in records], type=REASONS_TYPE)
        return table.append_column("reasons", reasons)

    return _all_or_nothing("decision", convert, decisions)


def conform_decisions(table: pa.Table) -> pa.Table:
    """A decoded batch (e.g. read straight from Avro) in the exact batch schema of :func:`decision_table`.

    Columns are picked by name and cast (time zones dropped: times are UTC); a missing optional column becomes
    nulls; a missing or null required one is an InvalidRecordError naming the first such row.
    """
    arrays = []
    for column in (*DECISION_COLUMNS, Column("reasons", "", REASONS_TYPE, required=False)):
        if column.name not in table.column_names:
            if column.required:
                raise InvalidRecordError(f"decision batch has no {column.name} column")
            arrays.append(pa.nulls(table.num_rows, column.arrow))
            continue
        try:
            array = table.column(column.name).cast(column.arrow)
        except pa.ArrowException as exc:
            raise InvalidRecordError(f"decision batch column {column.name}: {exc}") from exc
        if column.required and array.null_count:
            first = pc.index(pc.is_null(array), True).as_py()
            tx_id = table.column("tx_id")[first].as_py() if "tx_id" in table.column_names else None
            raise InvalidRecordError(f"decision #{first} (tx_id={tx_id!r}): {column.name} is null")
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=DECISION_BATCH_SCHEMA)


def label_table(labels: Sequence[Mapping], received_at: datetime) -> pa.Table:
    """Arrow batch of feedback labels, stamped ``received_at``, all or nothing.

    >>> from datetime import datetime, timezone
    >>> label = {"tx_id": "t1", "is_fraud": True, "source": "chargeback", "reported_at": 0}
    >>> label_table([label], datetime(2026, 1, 1, tzinfo=timezone.utc)).column("received_at")[0]
    <pyarrow.TimestampScalar: '2026-01-01T00:00:00.000'>
    """

    def convert(records: Sequence[Mapping]) -> pa.Table:
        return _table(LABEL_COLUMNS, [{**record, "received_at": received_at} for record in records])

    return _all_or_nothing("label", convert, labels)


def model_tables(version: str, reference: Mapping, registered_at: datetime) -> tuple[pa.Table, pa.Table]:
    """Arrow rows (models, reference_bins) of one model's feature names and reference profile.

    ``reference`` is a :func:`models.reference.reference_profile`; a profile without bins (an older model)
    gives the model row alone, so its features are still named but it has no drift baseline.

    >>> profile = {"feature_names": ["amount"], "score": {"edges": [0.5], "expected": [0.9, 0.1]},
    ...            "features": {"amount": {"edges": [10.0], "expected": [0.5, 0.5]}}}
    >>> models, bins = model_tables("v1", profile, datetime(2026, 1, 1))
    >>> bins.select(["variable", "position"]).to_pylist()
    [{'variable': 'score', 'position': None}, {'variable': 'amount', 'position': 1}]
    """
    names = list(reference.get("feature_names") or [])
    models = _table(MODEL_COLUMNS, [{"model_version": version, "feature_names": names, "registered_at": registered_at}])
    rows = []
    if reference.get("score"):
        rows.append({"variable": "score", "position": None, **reference["score"]})
    for position, name in enumerate(names, 1):
        if name in reference.get("features", {}):
            rows.append({"variable": name, "position": position, **reference["features"][name]})
    return models, _table(REFERENCE_COLUMNS, [{"model_version": version, **row} for row in rows])


def segment_name(first_seq: int) -> str:
    """File name of the segment whose rows start at flush ``first_seq``.

    >>> segment_name(3)
    '000000000003.parquet'
    """
    return f"{first_seq:012d}.parquet"


def segment_start(name: str) -> int | None:
    """``first_seq`` of a segment file name, or None for any other file (a temp file, say).

    >>> segment_start("000000000003.parquet"), segment_start("000000000003.parquet.tmp")
    (3, None)
    """
    match = _SEGMENT_RE.match(name)
    return int(match[1]) if match else None


def sql_string(text: str | Path) -> str:
    """A SQL string literal of ``text`` (a file path, say), quotes doubled.

    >>> sql_string("it's")
    "'it''s'"
    """
    text = str(text)
    return "'" + text.replace("'", "''") + "'"
