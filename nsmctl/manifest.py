"""YAML manifests → registry records, validated completely before anything is sent.

A manifest holds one or more YAML documents, each one record::

    kind: NetworkService            # or NetworkServiceEndpoint
    name: secure-db                 # or Kubernetes style: metadata: {name: secure-db}
    payload: IP
    matches: [...]

The record's fields use NSM's proto field names (snake_case). NSM's Kubernetes custom resources
are accepted as they are: ``apiVersion``, ``metadata.name`` and the fields under ``spec``.
:func:`load` checks every document -- the field names and types, then the registry's own rules
(:mod:`sdk.registry.validate`) -- and raises :class:`ManifestError` naming the document, the field
and what is accepted, so a bad file changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import yaml
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from nsmctl.context import CliError
from nsmctl.kinds import KINDS, CliKind, by_manifest
from sdk.errors import InvalidArgument
from sdk.registry.validate import validate_endpoint, validate_service

ENVELOPE = ("apiVersion", "kind", "metadata", "spec")
METADATA = ("name",)
_UINT32_MAX = 2**32 - 1


class ManifestError(CliError):
    """A manifest that cannot be applied; nothing of it was sent."""


@dataclass(frozen=True)
class Document:
    """One validated record of a manifest."""

    index: int                    # 1-based position among the manifest's non-empty documents
    kind: CliKind[Any]
    record: NetworkService | NetworkServiceEndpoint

    @property
    def name(self) -> str:
        return self.record.name


class _Problem(Exception):
    """A wrong field inside one document (the caller adds which document)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _timestamp(value: object, path: str) -> Timestamp:
    stamp = Timestamp()
    try:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError("no time zone")
            stamp.FromDatetime(value)
        elif isinstance(value, str):
            stamp.FromJsonString(value)
        else:
            raise ValueError(_type_name(value))
    except (ValueError, OverflowError):  # OverflowError: outside years 1-9999 once in UTC
        raise _Problem(path, f"{value!s} is not an RFC 3339 time with a time zone: "
                             "write it like 2030-01-02T03:04:05Z") from None
    return stamp


def _scalar(field: FieldDescriptor, value: object, path: str) -> object:
    """Check a YAML scalar against a proto scalar field."""
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_STRING:
        if not isinstance(value, str):
            raise _Problem(path, f"must be a string (got {_type_name(value)} {value!r}): "
                                 "quote it in YAML")
        return value
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        if not isinstance(value, bool):
            raise _Problem(path, f"must be true or false (got {value!r})")
        return value
    if kind == FieldDescriptor.CPPTYPE_UINT32:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT32_MAX:
            raise _Problem(path, f"must be a whole number from 0 to {_UINT32_MAX} (got {value!r})")
        return value
    raise _Problem(path, "this field cannot be set from a manifest")


def _fill(message: Message, data: object, path: str) -> None:
    """Set ``message``'s fields from a YAML mapping, checking names and types recursively."""
    if not isinstance(data, Mapping):
        raise _Problem(path, f"must be a mapping of fields (got {_type_name(data)})")
    fields = message.DESCRIPTOR.fields_by_name
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            raise _Problem(where, f"unknown field; accepted: {', '.join(fields)}")
        if value is not None:
            _set(message, cast(FieldDescriptor, field), value, where)


def _set(message: Message, field: FieldDescriptor, value: object, path: str) -> None:
    target = getattr(message, field.name)
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        if not isinstance(value, Mapping):
            raise _Problem(path, f"must be a mapping (got {_type_name(value)})")
        value_field = entry.fields_by_name["value"]
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Problem(path, f"keys must be strings (got {key!r}): quote it in YAML")
            where = f"{path}.{key}"
            if value_field.message_type is not None:
                _fill(target[key], item if item is not None else {}, where)
            else:
                target[key] = _scalar(value_field, item, where)
    elif field.is_repeated:
        if not isinstance(value, list):
            raise _Problem(path, f"must be a list (got {_type_name(value)})")
        for i, item in enumerate(value):
            where = f"{path}[{i}]"
            if entry is not None:
                _fill(target.add(), item, where)
            else:
                target.append(_scalar(field, item, where))
    elif entry is not None and entry.full_name == Timestamp.DESCRIPTOR.full_name:
        target.CopyFrom(_timestamp(value, path))
    elif entry is not None:
        _fill(target, value, path)
    else:
        setattr(message, field.name, _scalar(field, value, path))


def _name_of(doc: Mapping[str, Any], fields: Mapping[str, Any]) -> str:
    metadata = doc.get("metadata")
    meta_name = None
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise _Problem("metadata", f"must be a mapping (got {_type_name(metadata)})")
        for key in metadata:
            if key not in METADATA:
                raise _Problem(f"metadata.{key}", f"unknown field; accepted: {', '.join(METADATA)}")
        meta_name = metadata.get("name")
    name = fields.get("name")
    if name is not None and meta_name is not None and name != meta_name:
        raise _Problem("name", f"{name!r} differs from metadata.name {meta_name!r}: give one")
    found = name if name is not None else meta_name
    if found is None:
        raise _Problem("name", "missing: give name: or metadata: {name: ...}")
    if not isinstance(found, str):
        raise _Problem("name", f"must be a string (got {_type_name(found)} {found!r})")
    return found


def _document(doc: object) -> tuple[CliKind[Any], NetworkService | NetworkServiceEndpoint]:
    """Parse one YAML document into a record (raises _Problem)."""
    manifest_kinds = ", ".join(kind.manifest for kind in KINDS)
    if not isinstance(doc, Mapping):
        raise _Problem("", f"a document must be a mapping with kind: {manifest_kinds} "
                           f"(got {_type_name(doc)})")
    kind = by_manifest(doc.get("kind"))
    if kind is None:
        given = f"unknown kind {doc['kind']!r}" if "kind" in doc else "missing"
        raise _Problem("kind", f"{given}; accepted: {manifest_kinds}")
    if "spec" in doc:
        extra = [key for key in doc if key not in ENVELOPE]
        if extra:
            raise _Problem(str(extra[0]), f"with spec:, record fields go under spec (only "
                                          f"{', '.join(ENVELOPE)} are allowed at the top)")
        fields: Any = doc["spec"] if doc["spec"] is not None else {}
        if not isinstance(fields, Mapping):
            raise _Problem("spec", f"must be a mapping of fields (got {_type_name(fields)})")
    else:
        fields = {key: value for key, value in doc.items() if key not in ENVELOPE}
    name = _name_of(doc, fields)
    record = kind.record.message()
    _fill(record, {**fields, "name": name}, "")
    try:
        if isinstance(record, NetworkService):
            validate_service(record)
        else:
            validate_endpoint(record)
    except InvalidArgument as exc:
        raise _Problem(exc.field, exc.problem) from None
    expired = isinstance(record, NetworkServiceEndpoint) and record.HasField("expiration_time")
    if expired and record.expiration_time.seconds <= time.time():
        raise _Problem("expiration_time", "is in the past: leave it out for the registry's "
                                          "default lifetime, or give a future time")
    return kind, record


def _describe(index: int, doc: object) -> str:
    if isinstance(doc, Mapping):
        kind = doc.get("kind")
        meta = doc.get("metadata")
        name = doc.get("name") or (meta.get("name") if isinstance(meta, Mapping) else None)
        if isinstance(doc.get("spec"), Mapping):
            name = name or doc["spec"].get("name")
        if isinstance(kind, str) and isinstance(name, str):
            return f"document {index} ({kind} {name!r})"
    return f"document {index}"


def load(text: str, source: str) -> list[Document]:
    """Parse and validate every document of a manifest; ``source`` names it in errors."""
    try:
        raw = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"{source}: not valid YAML{at}: {problem}") from None
    except (ValueError, OverflowError) as exc:  # a value PyYAML cannot build, e.g. 2030-02-30
        raise ManifestError(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ManifestError(f"{source}: not valid YAML: nested too deeply") from None
    if not raw:
        raise ManifestError(f"{source}: no documents: expected kind: NetworkService or "
                            "NetworkServiceEndpoint records")
    documents: list[Document] = []
    seen: dict[tuple[str, str], int] = {}
    for index, doc in enumerate(raw, 1):
        try:
            kind, record = _document(doc)
        except _Problem as exc:
            raise ManifestError(f"{source}: {_describe(index, doc)}: {exc}") from None
        first = seen.setdefault((kind.manifest, record.name), index)
        if first != index:
            raise ManifestError(f"{source}: {_describe(index, doc)}: {kind.ref(record.name)} "
                                f"is already given in document {first}: give each record once")
        documents.append(Document(index, kind, record))
    return documents
