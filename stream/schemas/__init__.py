"""Avro schemas of riskstream's events, one ``<RecordName>.avsc`` file per record.

The ``.avsc`` files are the single source of truth for every event on the wire; all live in the
``riskstream`` namespace and refer to each other by full name (``riskstream.Reason``).
Load them through :func:`stream.codec.load_schema`, which resolves those references.
"""
