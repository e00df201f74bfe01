"""Errors raised by the audit store: one root, `AuditError`, so one ``except`` covers them all."""

from __future__ import annotations

__all__ = ["AuditError", "InvalidRecordError", "StoreLockedError"]


class AuditError(Exception):
    """Root of every error raised by the ``audit`` package."""


class StoreLockedError(AuditError):
    """Another process (or another store in this one) already writes this audit store.

    Only one audit writer may run per store root: DuckDB lets one process write a database file, or many read
    it, never both. Stop the other writer or point this one at a different root. Analysts never need the
    writer's file: they read through ``audit.reader`` or ``catalog.duckdb``, which work while the writer runs.
    """


class InvalidRecordError(AuditError, ValueError):
    """A decision or label lacks a field or holds a value of the wrong type.

    Nothing from the rejected call was buffered; send the named record to a dead-letter topic and go on.
    """
