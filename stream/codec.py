"""Avro encoding of riskstream's events, plain or in Confluent's wire format, and Faust codecs for them.

Two framings are read and written:

- ``plain``: the schemaless Avro body alone; both sides must agree on the schema out of band.
- ``confluent``: a zero magic byte, the writer schema's id as 4 big-endian bytes, then the body.
  The id lets a consumer decode records written with an older schema version: the body is read with
  the writer schema the id names and resolved to the current (reader) schema, so fields added since
  get their defaults.

``auto`` (the default) writes Confluent framing and reads both. The two framings are ambiguous: a
plain body may start with a zero byte too (a record whose first field is an empty string). ``auto``
reads a message as framed when it starts with 0, has at least 5 bytes and the id is in the registry;
if that read fails it tries the whole message as plain, and reports the framed error only when both
fail. A plain record is misread only if, in addition, bytes 1-4 spell a known id and the rest decodes
exactly under that schema: for a Transaction that needs an empty ``tx_id``, ``event_time`` 0 and
empty card and terminal ids, all of which validation rejects anyway.

Timestamps (``timestamp-millis``) decode to ``int`` epoch milliseconds, the unit the stream computes
in; encoding accepts ints (or datetimes). Any malformed input raises
:class:`~stream.exceptions.EventDecodeError` with a short ``reason`` code, never another exception,
so a worker can dead-letter it and go on.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException
from faust.serializers import codecs as faust_codecs

from stream.exceptions import EventDecodeError, EventEncodeError, StreamError

__all__ = [
    "DEFAULT_SCHEMA_IDS",
    "MAX_MESSAGE_BYTES",
    "NAMESPACE",
    "SCHEMA_DIR",
    "AvroCodec",
    "AvroFaustCodec",
    "SchemaRegistry",
    "WireFormat",
    "faust_codec_name",
    "framed_schema_id",
    "load_schema",
    "register_faust_codecs",
]

logger = logging.getLogger(__name__)

WireFormat = Literal["auto", "plain", "confluent"]

NAMESPACE = "riskstream"
SCHEMA_DIR = Path(__file__).with_name("schemas")

RETIRED_DIR = SCHEMA_DIR / "retired"


def _retired(name: str, schema_id: int) -> Mapping[str, Any]:
    """The layout a record had under an earlier schema id (``retired/<name>-<id>.avsc``)."""
    return json.loads((RETIRED_DIR / f"{name}-{schema_id}.avsc").read_text(encoding="utf-8"))


#: Confluent schema ids used when no registry is given; fixed, so producers and consumers agree. A record whose
#: layout changes takes a new id. An internal record's old id is retired, so that a message left over from an
#: older version fails to decode (``unknown_schema_id``) instead of being misread: 5, 6 and 8 were the
#: terminal-event records before card readings were packed as bytes. An external record's old layout stays
#: readable under its old id, the fields added since taking their defaults: 3 and 4 are the Decision and the Alert
#: before they carried ``threshold_logit``.
DEFAULT_SCHEMA_IDS: Mapping[int, str | Mapping[str, Any]] = MappingProxyType(
    {1: "Transaction", 2: "Feedback", 3: _retired("Decision", 3), 4: _retired("Alert", 4), 7: "TransactionBatch",
     9: "TerminalEvent", 10: "EnrichedTransaction", 11: "TerminalEventBatch", 12: "Decision", 13: "Alert"}
)

#: Messages larger than this are refused unread (a corrupt length could otherwise cost memory).
MAX_MESSAGE_BYTES = 1 << 20

_MAGIC_BYTE = 0
_HEADER_BYTES = 5
_MAX_SCHEMA_ID = 2**32 - 1
_NAMED_KINDS = ("record", "error", "enum", "fixed")


def _full_name(name: str) -> str:
    return name if "." in name else f"{NAMESPACE}.{name}"


@functools.cache
def _definitions() -> Mapping[str, Any]:
    """The packaged ``.avsc`` files by full record name (read once; never mutated)."""
    definitions = {}
    for path in sorted(SCHEMA_DIR.glob("*.avsc")):
        definition = json.loads(path.read_text(encoding="utf-8"))
        definitions[f"{definition.get('namespace', NAMESPACE)}.{definition['name']}"] = definition
    return MappingProxyType(definitions)


def _self_contained(node: Any, defined: set[str], logical_types: bool) -> Any:
    """Copy of a schema with each packaged type referenced by name defined inline where first used.

    Self-contained schemas parse on their own, which writer/reader resolution needs. Without
    ``logical_types`` the ``logicalType`` annotations are dropped, so timestamps read as plain ints.
    """
    if isinstance(node, str):
        definition = _definitions().get(node)
        if definition is None or node in defined:
            return node
        return _self_contained(definition, defined, logical_types)
    if isinstance(node, list):
        return [_self_contained(branch, defined, logical_types) for branch in node]
    if not isinstance(node, Mapping):
        return node
    copy = {key: value for key, value in node.items() if logical_types or key != "logicalType"}
    kind = node.get("type")
    if kind in _NAMED_KINDS and "name" in node:
        defined.add(node["name"] if "." in node["name"] else f"{node.get('namespace', NAMESPACE)}.{node['name']}")
    if kind in ("record", "error"):
        copy["fields"] = [
            {**field, "type": _self_contained(field["type"], defined, logical_types)} for field in node["fields"]
        ]
    elif kind == "array":
        copy["items"] = _self_contained(node["items"], defined, logical_types)
    elif kind == "map":
        copy["values"] = _self_contained(node["values"], defined, logical_types)
    return copy


def _parse(definition: Any, logical_types: bool) -> dict[str, Any]:
    try:
        return parse_schema(_self_contained(definition, set(), logical_types))
    except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
        raise StreamError(f"invalid Avro schema: {exc}") from exc


def _definition(name: str) -> Any:
    try:
        return _definitions()[_full_name(name)]
    except KeyError:
        known = ", ".join(sorted(full.rsplit(".", 1)[-1] for full in _definitions()))
        raise StreamError(f"unknown schema {name!r}; known: {known}") from None


def load_schema(name: str, *, logical_types: bool = True) -> dict[str, Any]:
    """Parse a packaged schema by record name, with the schemas it refers to resolved.

    ``logical_types=False`` drops ``logicalType`` annotations: the decoders use that form so
    ``timestamp-millis`` fields come back as epoch-millisecond ints, not datetimes.

    >>> load_schema("Transaction")["name"]
    'riskstream.Transaction'
    >>> [f["name"] for f in load_schema("Reason")["fields"]]
    ['feature', 'label', 'value', 'contribution']
    """
    return _parse(_definition(name), logical_types)


def framed_schema_id(data: bytes | bytearray | memoryview) -> int:
    """The schema id in a Confluent-framed message's header (the caller checked its length and magic byte)."""
    return int.from_bytes(data[1:_HEADER_BYTES], "big")


class SchemaRegistry:
    """Local map between Confluent schema ids and schemas; no network, so tests and the demo need no server.

    Each entry is either a packaged schema's name (the current version) or a schema definition (an
    older version, kept so that messages written with it still decode). :meth:`id_of` only returns
    ids of packaged names: that is the id an encoder writes. Against a real Schema Registry, register
    the same schemas there under the same ids.

    >>> registry = SchemaRegistry()
    >>> registry.id_of("Transaction"), registry.id_of("riskstream.Feedback")
    (1, 2)
    >>> 99 in registry
    False
    """

    def __init__(self, schemas: Mapping[int, str | Mapping[str, Any]] | None = None) -> None:
        entries = DEFAULT_SCHEMA_IDS if schemas is None else schemas
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}
        self._wire_schemas: dict[int, dict[str, Any]] = {}
        for schema_id, entry in entries.items():
            if not 0 <= schema_id <= _MAX_SCHEMA_ID:
                raise StreamError(f"schema id {schema_id} does not fit the 4-byte Confluent header")
            if isinstance(entry, str):
                full_name = _full_name(entry)
                if full_name in self._ids:
                    raise StreamError(f"schema {entry!r} registered twice (ids {self._ids[full_name]} and {schema_id})")
                self._ids[full_name] = schema_id
                definition = _definition(entry)
            else:
                definition = entry
            self._schemas[schema_id] = _parse(definition, logical_types=True)
            self._wire_schemas[schema_id] = _parse(definition, logical_types=False)

    def __contains__(self, schema_id: object) -> bool:
        return schema_id in self._schemas

    @property
    def newest_id(self) -> int:
        """The highest id registered. Ids only grow, so a record under a higher one comes from a newer version."""
        return max(self._schemas)

    def id_of(self, name: str) -> int:
        """The id an encoder writes for the packaged schema ``name``."""
        try:
            return self._ids[_full_name(name)]
        except KeyError:
            raise StreamError(f"schema {name!r} has no id in this registry") from None

    def schema_for(self, schema_id: int, *, logical_types: bool = True) -> dict[str, Any]:
        """The parsed writer schema for ``schema_id``; an unknown id is a decode error (dead letter)."""
        schemas = self._schemas if logical_types else self._wire_schemas
        try:
            return schemas[schema_id]
        except KeyError:
            raise EventDecodeError("unknown_schema_id", f"schema id {schema_id} is not in the registry") from None


class AvroCodec:
    """Encode and decode one event type; see the module docstring for the wire formats.

    >>> codec = AvroCodec("Feedback")
    >>> data = codec.encode({"tx_id": "t1", "is_fraud": True, "source": "analyst", "reported_at": 1_700_000_000_000})
    >>> data[:5]  # magic byte, then schema id 2
    b'\\x00\\x00\\x00\\x00\\x02'
    >>> codec.decode(data)["reported_at"], codec.decode(data)["terminal_id"]
    (1700000000000, None)
    """

    def __init__(
        self,
        schema_name: str,
        wire_format: WireFormat = "auto",
        registry: SchemaRegistry | None = None,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        if wire_format not in get_args(WireFormat):
            raise StreamError(f"wire_format must be one of {get_args(WireFormat)}, not {wire_format!r}")
        self.schema_name = schema_name
        self.wire_format = wire_format
        self.registry = registry if registry is not None else SchemaRegistry()
        self.max_message_bytes = max_message_bytes
        self._schema = load_schema(schema_name)
        self._reader = load_schema(schema_name, logical_types=False)
        self._header = b""
        if wire_format != "plain":
            self._header = bytes([_MAGIC_BYTE]) + self.registry.id_of(schema_name).to_bytes(4, "big")
        self._resolutions: dict[int, tuple[dict[str, Any], dict[str, Any] | None]] = {}

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Serialise ``record``: Confluent-framed unless the wire format is ``plain``."""
        buffer = io.BytesIO()
        buffer.write(self._header)
        try:
            schemaless_writer(buffer, self._schema, record)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise EventEncodeError(f"{self.schema_name} record does not fit its schema: {exc}") from exc
        data = buffer.getvalue()
        if len(data) > self.max_message_bytes:
            raise EventEncodeError(f"{self.schema_name} record is {len(data)} bytes, over {self.max_message_bytes}")
        return data

    def decode(self, data: bytes) -> dict[str, Any]:
        """Read one message; raises EventDecodeError (with a ``reason`` code) on anything malformed."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise EventDecodeError("not_bytes", f"expected bytes, got {type(data).__name__}")
        if len(data) > self.max_message_bytes:
            raise EventDecodeError("too_large", f"{len(data)} bytes, over the {self.max_message_bytes}-byte limit")
        if self.wire_format == "plain":
            return self._read(data, 0, self._reader, None)
        if self.wire_format == "confluent":
            return self._read_framed(data)
        if len(data) < _HEADER_BYTES or data[0] != _MAGIC_BYTE:
            return self._read(data, 0, self._reader, None)
        try:
            return self._read_framed(data)
        except EventDecodeError as framed_error:
            try:
                return self._read(data, 0, self._reader, None)
            except EventDecodeError:
                raise framed_error from None

    def decode_many(self, items: Iterable[bytes]) -> tuple[list[dict[str, Any]], list[tuple[int, EventDecodeError]]]:
        """Decode a batch; bad messages are returned with their index instead of stopping the batch.

        >>> codec = AvroCodec("Reason", "plain")
        >>> good = codec.encode({"feature": "f", "label": "l", "value": 1.0, "contribution": 0.0})
        >>> records, errors = codec.decode_many([good, b"\\x00"])
        >>> len(records), [(index, error.reason) for index, error in errors]
        (1, [(1, 'truncated')])
        """
        records: list[dict[str, Any]] = []
        errors: list[tuple[int, EventDecodeError]] = []
        for index, data in enumerate(items):
            try:
                records.append(self.decode(data))
            except EventDecodeError as error:
                errors.append((index, error))
        return records, errors

    def _read_framed(self, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        if len(data) < _HEADER_BYTES:
            raise EventDecodeError("truncated", f"{len(data)} bytes, shorter than the 5-byte Confluent header")
        if data[0] != _MAGIC_BYTE:
            raise EventDecodeError("bad_magic_byte", f"first byte is {data[0]}, Confluent framing needs 0")
        writer, reader = self._resolution(framed_schema_id(data))
        return self._read(data, _HEADER_BYTES, writer, reader)

    def _resolution(self, schema_id: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Writer schema for an id and the reader to resolve it to (None when they are the same)."""
        resolution = self._resolutions.get(schema_id)
        if resolution is None:
            writer = self.registry.schema_for(schema_id, logical_types=False)
            resolution = (writer, None if writer == self._reader else self._reader)
            self._resolutions[schema_id] = resolution
        return resolution

    def _read(
        self,
        data: bytes | bytearray | memoryview,
        offset: int,
        writer: dict[str, Any],
        reader: dict[str, Any] | None,
    ) -> dict[str, Any]:
        stream = io.BytesIO(data)
        stream.seek(offset)
        try:
            record = schemaless_reader(stream, writer, reader)
        except EOFError as exc:
            raise EventDecodeError("truncated", f"message ends inside a {self.schema_name} record ({exc})") from exc
        except SchemaResolutionError as exc:
            raise EventDecodeError("schema_mismatch", f"writer schema cannot be read as {self.schema_name}: {exc}") from exc
        except (ValueError, TypeError, IndexError, KeyError, OverflowError, MemoryError) as exc:
            # Garbage reaches fastavro's readers as impossible lengths, union indexes or UTF-8.
            raise EventDecodeError("invalid_avro", f"not a valid {self.schema_name} record: {exc}") from exc
        trailing = len(data) - stream.tell()
        if trailing:
            raise EventDecodeError("trailing_bytes", f"{trailing} bytes left after the {self.schema_name} record")
        return record


def faust_codec_name(schema_name: str) -> str:
    """The Faust codec name for a schema, as topics name it in ``value_serializer``.

    >>> faust_codec_name("TerminalEvent")
    'avro-terminal-event'
    """
    short_name = schema_name.rsplit(".", 1)[-1]
    return "avro-" + re.sub(r"(?<!^)(?=[A-Z])", "-", short_name).lower()


class AvroFaustCodec(faust_codecs.Codec):
    """Faust's codec interface over :class:`AvroCodec` (Faust ships no Avro codec of its own).

    Keyword arguments are those of :class:`AvroCodec`; Faust's ``clone`` (codec chaining) passes them on.
    """

    def __init__(self, children: tuple[faust_codecs.CodecT, ...] | None = None, **kwargs: Any) -> None:
        super().__init__(children, **kwargs)
        self.avro = AvroCodec(**kwargs)

    def _dumps(self, obj: Any) -> bytes:
        return self.avro.encode(obj)

    def _loads(self, s: bytes) -> Any:
        return self.avro.decode(s)


def register_faust_codecs(registry: SchemaRegistry | None = None, wire_format: WireFormat = "auto") -> None:
    """Register one Faust codec per event schema (``avro-transaction``, ``avro-feedback``, ...).

    Call once before building topics that name them; registering again replaces them.
    """
    registry = registry if registry is not None else SchemaRegistry()
    for schema_name in (entry for entry in DEFAULT_SCHEMA_IDS.values() if isinstance(entry, str)):
        codec = AvroFaustCodec(schema_name=schema_name, wire_format=wire_format, registry=registry)
        faust_codecs.register(faust_codec_name(schema_name), codec)
    logger.debug("registered Faust Avro codecs (wire format %s)", wire_format)
