"""Decode a batch of Avro messages of one schema into one Arrow table, in one columnar read.

Decoding records one by one (fastavro) costs tens of microseconds each; the audit writer needs far more than
that. Every Confluent-framed message written with the current schema is a plain Avro body, so the bodies of a
batch, laid end to end, are exactly one block of an Avro container file: polars reads that block into columns
in native code, several times faster. Anything else (plain framing, an older schema id) goes through
:class:`~stream.codec.AvroCodec` one message at a time, as before, and so does the whole batch whenever the
block cannot be trusted: a corrupt body would shift every record after it, so the block ends with a copy of
its first body, and the read is kept only if that copy comes back as the last row, equal to the first.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa
from polars.exceptions import PanicException

from stream.codec import AvroCodec, load_schema
from stream.exceptions import EventDecodeError

__all__ = ["AvroBatchDecoder", "DecodedBatch"]

_CONTAINER_MAGIC = b"Obj\x01"


def _long(value: int) -> bytes:
    """Avro's variable-length zig-zag encoding of a long."""
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _bytes(value: bytes) -> bytes:
    return _long(len(value)) + value


def _without_defaults(node: Any) -> Any:
    """A schema without its fields' defaults: the block is read with the exact schema it was written with, so
    they play no part, and polars refuses a block whose schema has a boolean default (``OutOfSpec``)."""
    if isinstance(node, dict):
        return {key: _without_defaults(value) for key, value in node.items() if key != "default"}
    if isinstance(node, list):
        return [_without_defaults(item) for item in node]
    return node


@dataclass
class DecodedBatch:
    """A batch's readable messages, as one Arrow table (the fast path) and as records (the rest)."""

    table: pa.Table | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    errors: list[tuple[int, EventDecodeError]] = field(default_factory=list)

    @property
    def decoded(self) -> int:
        return (self.table.num_rows if self.table is not None else 0) + len(self.records)


class AvroBatchDecoder:
    """Decodes batches of ``codec``'s messages; see the module docstring.

    >>> codec = AvroCodec("Feedback")
    >>> labels = [{"tx_id": f"t{i}", "is_fraud": i == 1, "source": "analyst", "reported_at": 1_700_000_000_000}
    ...           for i in range(3)]
    >>> batch = AvroBatchDecoder(codec).decode([codec.encode(label) for label in labels] + [b"junk"])
    >>> batch.table.column("tx_id").to_pylist(), batch.table.column("is_fraud").to_pylist(), batch.records
    (['t0', 't1', 't2'], [False, True, False], [])
    >>> [(index, error.reason) for index, error in batch.errors]
    [(3, 'truncated')]
    """

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        self._framing = bytes([0]) + codec.registry.id_of(codec.schema_name).to_bytes(4, "big")
        self._sync = os.urandom(16)
        schema = json.dumps(_without_defaults(load_schema(codec.schema_name))).encode()
        metadata = _long(1) + _bytes(b"avro.schema") + _bytes(schema) + _long(0)
        self._container_header = _CONTAINER_MAGIC + metadata + self._sync

    def decode(self, values: Sequence[bytes | None]) -> DecodedBatch:
        """Decode ``values``; an unreadable message is returned in ``errors`` with its index, never raised."""
        framing, skip = self._framing, len(self._framing)
        fast = [index for index, value in enumerate(values) if value and value.startswith(framing)]
        # Bytes slices, not memoryviews: a copy of a few hundred bytes is cheaper than the garbage collections that
        # thousands of memoryview objects a poll set off (bench/audit_writer.py: 5 µs a message in a large process).
        batch = DecodedBatch(table=self._read_block([values[index][skip:] for index in fast]) if fast else None)  # type: ignore[index]
        slow = range(len(values)) if batch.table is None else sorted(set(range(len(values))) - set(fast))
        for index in slow:
            try:
                batch.records.append(self.codec.decode(values[index] or b""))
            except EventDecodeError as error:
                batch.errors.append((index, error))
        return batch

    def _read_block(self, bodies: list[bytes]) -> pa.Table | None:
        """The bodies as one table, or None when the block does not read back whole (see the module docstring)."""
        bodies.append(bodies[0])
        data = b"".join(bodies)
        container = self._container_header + _long(len(bodies)) + _long(len(data)) + data + self._sync
        try:
            frame = pl.read_avro(io.BytesIO(container))
        except (PanicException, pl.exceptions.PolarsError, OSError, ValueError):
            return None
        # polars compares NaN equal to NaN (Arrow does not): a NaN in the first body must not reject the block
        if frame.height != len(bodies) or not frame.head(1).equals(frame.tail(1)):
            return None
        return frame.head(len(bodies) - 1).to_arrow()
