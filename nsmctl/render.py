"""Turning registry records into output: tables, watch lines, descriptions, JSON and YAML.

Per-kind knowledge is data: :data:`COLUMNS` (the table columns) and :data:`DESCRIBERS` (the
``describe`` layout), both keyed by the record kind's ``key``; everything else is shared.
JSON and YAML carry the records as NSM's protobuf JSON mapping with the proto field names
(``network_service_names``, not ``networkServiceNames``) and RFC 3339 times.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.table import Table

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from nsmctl.kinds import CliKind

NONE = "<none>"


class Output(StrEnum):
    """The ``-o`` formats of read commands."""

    table = "table"
    json = "json"
    yaml = "yaml"


class Change(StrEnum):
    """What a watch event did, as printed."""

    added = "ADDED"
    modified = "MODIFIED"
    deleted = "DELETED"


# -- values ---------------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """A short duration in the style of kubectl: ``42s``, ``3m12s``, ``5h20m``, ``3d4h``."""
    s = int(seconds)
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 48:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if days < 365:
        return f"{days}d{hours % 24}h" if hours % 24 and days < 8 else f"{days}d"
    return f"{days // 365}y{days % 365}d"


def seconds_of(timestamp: Timestamp) -> float:
    """A protobuf Timestamp as Unix seconds."""
    return timestamp.ToNanoseconds() / 1e9


def rfc3339(timestamp: Timestamp) -> str:
    """A Timestamp as RFC 3339 in UTC to the second, e.g. ``2030-01-02T03:04:05Z``."""
    instant = datetime.fromtimestamp(timestamp.seconds, UTC)
    return instant.isoformat(timespec="seconds").replace("+00:00", "Z")


def time_left(timestamp: Timestamp, now: float) -> str:
    """``42s`` until the instant, or ``expired``."""
    left = seconds_of(timestamp) - now
    return human_duration(left) if left > 0 else "expired"


def age(timestamp: Timestamp, now: float) -> str:
    """How long ago the instant was (``<unknown>`` when unset)."""
    return human_duration(now - seconds_of(timestamp)) if timestamp.seconds else "<unknown>"


def selector(labels: Mapping[str, str]) -> str:
    """``app=web,tier=db``; ``*`` for an empty selector (it matches everything)."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "*"


def labels_text(labels: Mapping[str, str]) -> str:
    """``app=web, tier=db`` or ``<none>``."""
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or NONE


def match_summary(ns: NetworkService) -> str:
    """All matches of a service on one line: ``app=web → app=db:90, app=replica:10; * → …``."""
    parts = []
    for match in ns.matches:
        routes = ", ".join(
            selector(route.destination_selector) + (f":{route.weight}" if route.weight else "")
            for route in match.routes
        )
        parts.append(f"{selector(match.source_selector)} → {routes or NONE}"
                     + (" (fallthrough)" if match.fallthrough else ""))
    return "; ".join(parts) or NONE


def service_labels_summary(nse: NetworkServiceEndpoint) -> str:
    """``svc: k=v,k=v; other: k=v`` for the services that carry labels."""
    return "; ".join(
        f"{service}: {selector(entry.labels)}"
        for service, entry in sorted(nse.network_service_labels.items())
        if entry.labels
    ) or NONE


# -- tables ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A table column: header, how to compute its cell, and its width in watch lines (a longer
    cell is cut there with '…'; 0: the last column, never cut)."""

    header: str
    cell: Callable[[Any, float], str]
    width: int


COLUMNS: dict[str, tuple[Column, ...]] = {
    "ns": (
        Column("NAME", lambda r, now: r.name, 24),
        Column("PAYLOAD", lambda r, now: r.payload or "IP", 8),
        Column("MATCHES", lambda r, now: match_summary(r), 0),
    ),
    "nse": (
        Column("NAME", lambda r, now: r.name, 24),
        Column("SERVICES", lambda r, now: ",".join(r.network_service_names) or NONE, 20),
        Column("LABELS", lambda r, now: service_labels_summary(r), 28),
        Column("URL", lambda r, now: r.url, 28),
        Column("EXPIRES IN", lambda r, now: (
            time_left(r.expiration_time, now) if r.HasField("expiration_time") else "never"), 10),
        Column("AGE", lambda r, now: age(r.initial_registration_time, now), 0),
    ),
}


def table(kind: CliKind[Any], records: Iterable[Message], now: float) -> Table:
    """A borderless table of records, one row each."""
    columns = COLUMNS[kind.record.key]
    grid = Table(box=None, pad_edge=False, header_style="bold", padding=(0, 3, 0, 0))
    for column in columns:
        grid.add_column(column.header, no_wrap=True, overflow="fold")
    for record in records:
        grid.add_row(*(column.cell(record, now) for column in columns))
    return grid


def _fit(text: str, width: int) -> str:
    """``text`` padded to ``width``, or cut to it with a final '…' (width 0: as it is), so a long
    cell never pushes the columns after it out of line."""
    if not width:
        return text
    return text.ljust(width) if len(text) <= width else text[:width - 1] + "…"


def _line(cells: Iterable[tuple[str, int]]) -> str:
    return "   ".join(_fit(text, width) for text, width in cells).rstrip()


def watch_header(kind: CliKind[Any]) -> str:
    """The header line of a table-mode watch."""
    columns = COLUMNS[kind.record.key]
    return _line([("EVENT", 8), *((c.header, c.width) for c in columns)])


def watch_line(kind: CliKind[Any], change: Change, record: Message, now: float) -> str:
    """One table-mode watch line: the change, then the record's table cells."""
    columns = COLUMNS[kind.record.key]
    return _line([(change.value, 8), *((c.cell(record, now), c.width) for c in columns)])


# -- JSON and YAML --------------------------------------------------------------------------------


def to_dict(record: Message) -> dict[str, Any]:
    """A record as NSM's JSON mapping with proto field names."""
    return json_format.MessageToDict(record, preserving_proto_field_name=True)


def field_value(record: Message, name: str) -> Any:
    """One field of a record as :func:`to_dict` shows it (None when unset)."""
    return to_dict(record).get(name)


def dump(data: Any, output: Output) -> str:
    """``data`` as JSON (indented) or YAML (block style, keys in message order)."""
    if output is Output.json:
        return json.dumps(data, indent=2, ensure_ascii=False)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


def watch_event(change: Change, record: Message, output: Output) -> str:
    """A watch event as kubectl prints it: ``{"type": "ADDED", "object": {...}}``, one line of
    JSON, or one YAML document."""
    data = {"type": change.value, "object": to_dict(record)}
    if output is Output.json:
        return json.dumps(data, ensure_ascii=False)
    return "---\n" + dump(data, output).rstrip("\n")


# -- describe -------------------------------------------------------------------------------------


LABEL_WIDTH = 22


def _fields(rows: Iterable[tuple[str, str]], indent: int = 0) -> list[str]:
    """``Label:  value`` lines, values aligned at one column across the whole description."""
    return [
        " " * indent + f"{label + ':':<{max(LABEL_WIDTH - indent, len(label) + 2)}}{value}".rstrip()
        for label, value in rows
    ]


def describe_service(ns: NetworkService, now: float) -> list[str]:
    """Every field of a NetworkService, matches in full."""
    lines = _fields([("Name", ns.name), ("Kind", "NetworkService"),
                     ("Payload", ns.payload or "IP"), ("Matches", str(len(ns.matches)))])
    for i, match in enumerate(ns.matches, 1):
        lines.append(f"  Match {i}:")
        lines += _fields([
            ("Source selector", selector(match.source_selector)),
            ("Fallthrough", "true" if match.fallthrough else "false"),
            ("Metadata labels", labels_text(match.metadata.labels)),
            ("Routes", "" if match.routes else NONE),
        ], indent=4)
        for route in match.routes:
            lines.append(f"      - {selector(route.destination_selector)}"
                         f"  weight {route.weight or '<unset>'}")
    lines += _fields([("Path IDs", ", ".join(ns.path_ids) or NONE)])
    return lines


def describe_endpoint(nse: NetworkServiceEndpoint, now: float) -> list[str]:
    """Every field of a NetworkServiceEndpoint, with times also relative to now."""
    expires = (f"{rfc3339(nse.expiration_time)} (in {time_left(nse.expiration_time, now)})"
               if nse.HasField("expiration_time") else "never")
    registered = (f"{rfc3339(nse.initial_registration_time)} "
                  f"({age(nse.initial_registration_time, now)} ago)"
                  if nse.initial_registration_time.seconds else "<unknown>")
    lines = _fields([("Name", nse.name), ("Kind", "NetworkServiceEndpoint"), ("URL", nse.url),
                     ("Services", "" if nse.network_service_names else NONE)])
    for service in nse.network_service_names:
        entry = nse.network_service_labels.get(service)
        lines.append(f"  {service}")
        lines += _fields([("Labels", labels_text(entry.labels if entry else {}))], indent=4)
    lines += _fields([("Expires", expires), ("Registered", registered),
                      ("Path IDs", ", ".join(nse.path_ids) or NONE)])
    return lines


DESCRIBERS: dict[str, Callable[[Any, float], list[str]]] = {
    "ns": describe_service,
    "nse": describe_endpoint,
}


def describe(kind: CliKind[Any], record: Message, now: float) -> str:
    """The multi-line description of a record."""
    return "\n".join(DESCRIBERS[kind.record.key](record, now))
