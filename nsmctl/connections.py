"""Connections as operators read them: one row per connection, in the style of tailscale status.

Input is a connection as NSM's JSON mapping (proto field names). A row says which service and
endpoint, the addresses on both ends, how the vWire is carried (``wireguard`` between nodes or
``veth`` on one node), its MTU, the WireGuard handshake age and byte counters the forwarders put
into the path (as of the last refresh), and the path's hops.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.table import Table

NONE = "-"
COLUMNS = ("ID", "SERVICE", "ENDPOINT", "CLIENT", "ENDPOINT ADDR", "VIA", "MTU", "HANDSHAKE",
           "RX/TX", "STATE")


def _metrics(conn: Mapping[str, Any]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for segment in conn.get("path", {}).get("path_segments", []):
        for key, value in segment.get("metrics", {}).items():
            merged.setdefault(key, value)
    return merged


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
    rx = metrics.get("wireguard_rx_bytes") or metrics.get("client_rx_bytes")
    tx = metrics.get("wireguard_tx_bytes") or metrics.get("client_tx_bytes")
    hops = [s.get("name", "?") for s in conn.get("path", {}).get("path_segments", [])]
    return {
        "id": str(conn.get("id", "")),
        "service": str(conn.get("network_service", "")),
        "endpoint": str(conn.get("network_service_endpoint_name", "")) or NONE,
        "client_addresses": ",".join(ip.get("src_ip_addrs", [])) or NONE,
        "endpoint_addresses": ",".join(ip.get("dst_ip_addrs", [])) or NONE,
        "via": "wireguard" if wireguard else ("veth" if metrics else NONE),
        "mtu": str(conn.get("context", {}).get("MTU", "")) or NONE,
        "handshake": NONE if handshake in (None, "never") else f"{handshake}s ago",
        "rx_tx": f"{_bytes(rx)}/{_bytes(tx)}",
        "state": str(conn.get("state", "UP")),
        "path": " → ".join(hops),
    }


def per_client(connections: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One entry per end-to-end connection: a node's nsmgr sees a connection once per hop it
    plays (towards its forwarder, then towards the next node); keep the hop nearest the client."""
    best: dict[str, Mapping[str, Any]] = {}
    for conn in connections:
        segments = conn.get("path", {}).get("path_segments", [])
        key = segments[0].get("id", "") if segments else str(conn.get("id", ""))
        index = int(conn.get("path", {}).get("index", 0))
        kept = best.get(key)
        if kept is None or index < int(kept.get("path", {}).get("index", 0)):
            best[key] = conn
    return list(best.values())


def table(connections: Iterable[Mapping[str, Any]]) -> Table:
    """A rich table of connections (ids shortened to 8 characters)."""
    view = Table(box=None, pad_edge=False, header_style="bold")
    for column in COLUMNS:
        view.add_column(column)
    for conn in connections:
        row = summary(conn)
        view.add_row(row["id"][:8], row["service"], row["endpoint"], row["client_addresses"],
                     row["endpoint_addresses"], row["via"], row["mtu"], row["handshake"],
                     row["rx_tx"], row["state"])
    return view
