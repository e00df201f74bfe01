"""The DuckDB audit store: every decision and label, queryable by analysts while the writer runs.

Read in this order: ``schema`` (columns, tables, Arrow batches), ``store`` (``AuditStore``, the one writer:
idempotent Arrow inserts, retention), ``segments`` (the Parquet files it exports), ``views`` (what analysts
query), ``reader`` (``connect``/``query`` over the exports), ``inputs`` (stored model inputs with the labels
known at a cut-off, for retraining and replay).
Nothing here imports the stream: the stream hands decoded records to ``AuditStore`` and commits its offsets
after ``flush()``; training reads through ``audit.reader``.
"""

from audit.exceptions import AuditError, InvalidRecordError, StoreLockedError
from audit.reader import connect, query
from audit.store import AuditStore, FlushResult, PruneResult
from audit.views import VIEWS

__all__ = [
    "VIEWS",
    "AuditError",
    "AuditStore",
    "FlushResult",
    "InvalidRecordError",
    "PruneResult",
    "StoreLockedError",
    "connect",
    "query",
]
