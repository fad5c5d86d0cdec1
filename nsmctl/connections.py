"""Connections as operators read them: one row per connection, in the style of tailscale status.

Input is a connection as NSM's JSON mapping (proto field names). A row says which service and
endpoint, the addresses on both ends, how the vWire is carried (``wireguard`` between nodes or
``veth`` on one node), its MTU, the WireGuard handshake age and byte counters the forwarders put
into the path, and the path's hops.

**One connection, one ID.** Every hop of a connection (the client, each nsmgr, each forwarder,
the endpoint) keeps its own copy with its own ``id``; the ID shown to operators is the client's,
``path.path_segments[0].id`` (:func:`connection_id`), the same whichever hop is asked and kept
across refreshes and heals. Tables show the shortest unique prefix of at least
:data:`SHORT` characters (:func:`short_ids`); :func:`resolve` takes such a prefix back, as git
does. ``nsmctl connect``, ``status``, ``close`` and ``lab status`` all use these.

**Live counters.** The counters in a path are as of the hop's last request (refresh);
:func:`with_counters` puts fresher ones in, read from the forwarders when asked (see
``nsmctl status``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.table import Table

from sdk.networkservice.markdomain import DOMAIN_METRIC

NONE = "-"
SHORT = 8
COLUMNS = ("ID", "SERVICE", "ENDPOINT", "CLIENT", "ENDPOINT ADDR", "VIA", "MTU", "HANDSHAKE",
           "RX/TX", "STATE")


class UnknownConnection(LookupError):
    """No connection, or more than one, has the ID (or prefix) asked for; the message says
    which."""


def connection_id(conn: Mapping[str, Any]) -> str:
    """The connection's one ID: the client's path segment id (the connection's own ``id`` when
    it has no path)."""
    segments = conn.get("path", {}).get("path_segments", [])
    first = str(segments[0].get("id", "")) if segments else ""
    return first or str(conn.get("id", ""))


def short_ids(ids: Iterable[str], minimum: int = SHORT) -> dict[str, str]:
    """Each ID's shortest prefix (at least ``minimum`` characters) that no other ID shares."""
    unique = sorted(set(ids))
    short: dict[str, str] = {}
    for i, full in enumerate(unique):
        length = minimum
        for other in (unique[i - 1] if i else "", unique[i + 1] if i + 1 < len(unique) else ""):
            common = 0
            while common < min(len(full), len(other)) and full[common] == other[common]:
                common += 1
            length = max(length, common + 1)
        short[full] = full[:length]
    return short


def resolve(wanted: str, ids: Iterable[str]) -> str:
    """The one ID equal to ``wanted`` or starting with it; :class:`UnknownConnection` when none
    or several do (an exact match wins over longer IDs sharing the prefix)."""
    known = sorted(set(ids))
    if wanted in known:
        return wanted
    matches = [full for full in known if wanted and full.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UnknownConnection(f"no connection {wanted!r}")
    shown = ", ".join(short_ids(known)[m] for m in matches)
    raise UnknownConnection(f"{wanted!r} matches {len(matches)} connections ({shown}): "
                            "give more of the ID")


def with_counters(conn: Mapping[str, Any], counters: Mapping[str, Mapping[str, str]]
                  ) -> dict[str, Any]:
    """A copy of ``conn`` whose path segments carry ``counters[segment id]`` where given
    (fresher counters, e.g. read from a forwarder just now)."""
    copy = dict(conn)
    path = dict(conn.get("path", {}))
    segments = []
    for segment in path.get("path_segments", []):
        fresh = counters.get(str(segment.get("id", "")))
        segments.append({**segment, "metrics": dict(fresh)} if fresh is not None else segment)
    if segments:
        path["path_segments"] = segments
        copy["path"] = path
    return copy


def _metrics(conn: Mapping[str, Any]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for segment in conn.get("path", {}).get("path_segments", []):
        for key, value in segment.get("metrics", {}).items():
            if key != DOMAIN_METRIC:
                merged.setdefault(key, value)
    return merged


def hops(conn: Mapping[str, Any]) -> str:
    """The path's hop names; where it crosses domains (gateways mark their segments with their
    domain), each domain's hops start with ``[domain]``: ``[a] web → … → gateway-a → [b]
    gateway-b → … → nse``."""
    segments = conn.get("path", {}).get("path_segments", [])
    marks = [str(s.get("metrics", {}).get(DOMAIN_METRIC, "")) for s in segments]
    names = [str(s.get("name", "?")) for s in segments]
    if not any(marks):
        return " → ".join(names)
    current = next(m for m in marks if m)  # the hops before the first gateway: its domain
    shown: list[str] = []
    for mark, name in zip(marks, names, strict=True):
        if (mark and mark != current) or not shown:
            current = mark or current
            name = f"[{current}] {name}"
        shown.append(name)
    return " → ".join(shown)


def _bytes(value: str | None) -> str:
    # A metric is text another process wrote: only plain ASCII digits are a byte count
    # (isdigit() alone accepts '²', which float() refuses).
    if value is None or not (value.isascii() and value.isdigit()):
        return NONE
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return NONE


def summary(conn: Mapping[str, Any]) -> dict[str, str]:
    """The operator's view of one connection (see the module docstring)."""
    ip = conn.get("context", {}).get("ip_context", {})
    metrics = _metrics(conn)
    wireguard = any(key.startswith("wireguard_") for key in metrics)
    handshake = metrics.get("wireguard_last_handshake_age_seconds")
    rx = (metrics.get("wireguard_rx_bytes") or metrics.get("workload_rx_bytes")
          or metrics.get("client_rx_bytes"))
    tx = (metrics.get("wireguard_tx_bytes") or metrics.get("workload_tx_bytes")
          or metrics.get("client_tx_bytes"))
    via = "wireguard" if wireguard else ("veth" if metrics else NONE)
    if metrics.get("wireguard_device") == "shared":
        via = f"wireguard shared #{metrics.get('wireguard_space', '0')}"
    return {
        "id": connection_id(conn),
        "service": str(conn.get("network_service", "")),
        "endpoint": str(conn.get("network_service_endpoint_name", "")) or NONE,
        "client_addresses": ",".join(ip.get("src_ip_addrs", [])) or NONE,
        "endpoint_addresses": ",".join(ip.get("dst_ip_addrs", [])) or NONE,
        "via": via,
        "mtu": str(conn.get("context", {}).get("MTU", "")) or NONE,
        "handshake": NONE if handshake in (None, "never") else f"{handshake}s ago",
        "rx_tx": f"{_bytes(rx)}/{_bytes(tx)}",
        "state": str(conn.get("state", "UP")),
        "path": hops(conn),
    }


def per_client(connections: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One entry per end-to-end connection: a node's nsmgr sees a connection once per hop it
    plays (towards its forwarder, then towards the next node); keep the hop nearest the client."""
    best: dict[str, Mapping[str, Any]] = {}
    for conn in connections:
        key = connection_id(conn)
        index = int(conn.get("path", {}).get("index", 0))
        kept = best.get(key)
        if kept is None or index < int(kept.get("path", {}).get("index", 0)):
            best[key] = conn
    return list(best.values())


def table(connections: Iterable[Mapping[str, Any]]) -> Table:
    """A rich table of connections, IDs as their shortest unique prefix (:func:`short_ids`)."""
    rows = [summary(conn) for conn in connections]
    short = short_ids(row["id"] for row in rows)
    view = Table(box=None, pad_edge=False, header_style="bold")
    for column in COLUMNS:
        view.add_column(column)
    for row in rows:
        view.add_row(short[row["id"]], row["service"], row["endpoint"], row["client_addresses"],
                     row["endpoint_addresses"], row["via"], row["mtu"], row["handshake"],
                     row["rx_tx"], row["state"])
    return view


def paths(connections: Iterable[Mapping[str, Any]]) -> list[str]:
    """``  ID: hop → hop → …`` lines, one per connection, with the IDs :func:`table` shows."""
    rows = [summary(conn) for conn in connections]
    short = short_ids(row["id"] for row in rows)
    return [f"  {short[row['id']]}: {row['path']}" for row in rows]
