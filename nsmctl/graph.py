"""The fabric's topology, gathered once and shared by ``nsmctl graph`` and ``nsmctl dashboard``.

:func:`collect` asks the sources (the registry for its endpoints, every node's nsmgr for the
connections it monitors and the forwarders registered with it, every forwarder for its live
counters) and returns a :class:`Snapshot` of what they said, or that they did not answer.
:func:`build` turns a snapshot into the topology (plain JSON data, :data:`VERSION` 1):

- ``domain``: the domain's name (the trust domain of the registry's records, else ``default``)
  and its registry (``url``, ``up``, ``error``): the root of the tree;
- ``nodes``: one per nsmgr asked (``name``, ``nsmgr`` {name, url, up, error}, ``forwarders``
  [{name, url, up, wireguard, underlay_ip}]);
- ``endpoints``: the registry's endpoints (``name``, ``services``, ``url``, ``node`` they are
  served from, or None when no node asked serves it; ``registered`` true), and the endpoints of
  connections that the registry no longer lists (``registered`` false: it died or left);
- ``clients``: the first hop of every connection (``name``, ``node``);
- ``connections``: one per vWire, by its one ID (:func:`nsmctl.connections.connection_id`):
  service, client and endpoint with their nodes, ``state`` (``DOWN`` when any nsmgr reports it
  down), how it is carried (``wireguard``/``veth``), MTU, handshake age, rx/tx bytes (read from
  the forwarders now where they answered) and the path's hops.

A node's name is the one given (the lab's ``n1``...), else the nsmgr's own name as it signs
its path segments, else its address. Building is pure: tests feed fixed snapshots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.protobuf import json_format

from api.proto.registry_pb2 import NetworkServiceEndpoint
from nsmctl import connections
from nsmctl.node_cmds import forwarder_counters, monitor_connections, registered_forwarders
from sdk.chain import CallContext
from sdk.errors import DeadlineExceeded, FabricError, Unavailable
from sdk.grpcutil import channel
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Query, RegistryChain
from sdk.registry.kinds import ENDPOINT
from sdk.security.redact import redact_tokens

VERSION = 1
DEFAULT_DOMAIN = "default"
UP, DOWN = "UP", "DOWN"


@dataclass(frozen=True)
class NodeSource:
    """Where to ask about one node: its nsmgr, its name when known (the lab's ``n1``), and the
    nsmgr's own name when learned before (it is seen only in the connections it reports)."""

    nsmgr: str
    name: str = ""
    nsmgr_name: str = ""


@dataclass
class NodeView:
    """What one node's nsmgr said: its connections (NSM JSON mapping) and forwarders."""

    source: NodeSource
    up: bool = False
    error: str = ""
    connections: list[dict[str, Any]] = field(default_factory=list)
    forwarders: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Snapshot:
    """Everything the sources said at one moment (see the module docstring)."""

    registry: str
    registry_up: bool = False
    registry_error: str = ""
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[NodeView] = field(default_factory=list)
    counters: dict[str, dict[str, str]] = field(default_factory=dict)
    counters_stale: list[str] = field(default_factory=list)
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))


# -- gathering ------------------------------------------------------------------------------------


def _problem(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return "does not answer"
        return f"{exc.code().name}: {exc.details() or ''}".rstrip(": ")
    if isinstance(exc, TimeoutError | Unavailable | DeadlineExceeded):
        return "does not answer"
    return str(exc) or type(exc).__name__


async def _endpoints(url: str, timeout: float) -> list[dict[str, Any]]:
    """The endpoints the registry API at ``url`` lists."""
    async with channel(url) as ch:
        registry = RegistryChain([RemoteRegistry(ENDPOINT, ch)])
        template = NetworkServiceEndpoint()
        return [json_format.MessageToDict(e.record, preserving_proto_field_name=True)
                async for e in registry.find(Query(template), CallContext.with_timeout(timeout))]


async def _node(source: NodeSource, timeout: float) -> NodeView:
    view = NodeView(source)
    try:
        connections = await asyncio.wait_for(monitor_connections(source.nsmgr, timeout), timeout)
        view.connections = redact_tokens([
            json_format.MessageToDict(c, preserving_proto_field_name=True) for c in connections])
        view.up = True
        view.forwarders = await asyncio.wait_for(
            registered_forwarders(source.nsmgr, timeout), timeout)
    except (grpc.aio.AioRpcError, TimeoutError, FabricError, OSError) as exc:
        view.error = _problem(exc)
    return view


async def collect(registry: str, nodes: Sequence[NodeSource], timeout: float) -> Snapshot:
    """Ask every source (concurrently, each call bounded by ``timeout``); a source that fails
    is marked down with why, never an exception."""
    snapshot = Snapshot(registry)

    async def ask_registry() -> None:
        try:
            snapshot.endpoints = await asyncio.wait_for(_endpoints(registry, timeout), timeout)
            snapshot.registry_up = True
        except (grpc.aio.AioRpcError, TimeoutError, FabricError, OSError) as exc:
            snapshot.registry_error = _problem(exc)

    views, _ = await asyncio.gather(asyncio.gather(*(_node(n, timeout) for n in nodes)),
                                    ask_registry())
    snapshot.nodes = list(views)
    forwarders = [f for view in snapshot.nodes for f in view.forwarders]
    snapshot.counters, snapshot.counters_stale = await forwarder_counters(forwarders, timeout)
    return snapshot


# -- building -------------------------------------------------------------------------------------


def _segments(conn: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(conn.get("path", {}).get("path_segments", []))


def _nsmgr_name(view: NodeView) -> str:
    """The nsmgr's own name: its path segment in the connections it reports."""
    for conn in view.connections:
        segments = _segments(conn)
        index = int(conn.get("path", {}).get("index", 0))
        if 0 <= index < len(segments):
            return str(segments[index].get("name", ""))
    return view.source.nsmgr_name


def _node_names(views: Sequence[NodeView]) -> list[str]:
    names = []
    for view in views:
        name = view.source.name or _nsmgr_name(view) or view.source.nsmgr
        while name in names:
            name += "'"
        names.append(name)
    return names


def _domain(endpoints: Iterable[Mapping[str, Any]]) -> str:
    """The trust domain of the records' SPIFFE IDs when they agree, else :data:`DEFAULT_DOMAIN`."""
    domains = {urlsplit(str(pid)).hostname or "" for e in endpoints
               for pid in e.get("path_ids", []) if str(pid).startswith("spiffe://")}
    domains.discard("")
    return domains.pop() if len(domains) == 1 else DEFAULT_DOMAIN


def _metric_int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


def _first(metrics: Sequence[Mapping[str, str]], *keys: str) -> str | None:
    for key in keys:
        for seg in metrics:
            if key in seg:
                return seg[key]
    return None


def _counters(conn: Mapping[str, Any]) -> dict[str, Any]:
    metrics = [dict(s["metrics"]) for s in _segments(conn) if s.get("metrics")]
    wireguard = any(k.startswith("wireguard_") for m in metrics for k in m)
    return {
        "via": "wireguard" if wireguard else ("veth" if metrics else None),
        "handshake_age_seconds": _metric_int(
            _first(metrics, "wireguard_last_handshake_age_seconds")),
        "rx_bytes": _metric_int(_first(metrics, "wireguard_rx_bytes", "workload_rx_bytes",
                                       "client_rx_bytes")),
        "tx_bytes": _metric_int(_first(metrics, "wireguard_tx_bytes", "workload_tx_bytes",
                                       "client_tx_bytes")),
    }


def _connection(views: list[dict[str, Any]], nodes_by_nsmgr: Mapping[str, str],
                counters: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """One vWire from every hop's view of it (``views``, nearest the client first)."""
    conn = connections.with_counters(views[0], counters)
    names = [str(s.get("name", "")) for s in _segments(conn)]
    ip = conn.get("context", {}).get("ip_context", {})
    client_nsmgr = names[1] if len(names) > 2 else ""
    # The endpoint's node: the last nsmgr on the path (its forwarder dials the endpoint).
    endpoint_nsmgr = next((n for n in reversed(names[1:-1]) if n in nodes_by_nsmgr), "")
    state = DOWN if any(v.get("state", UP) == DOWN for v in views) else UP
    return {
        "id": connections.connection_id(conn),
        "service": str(conn.get("network_service", "")),
        "client": names[0] if names else "",
        "client_node": nodes_by_nsmgr.get(client_nsmgr),
        "endpoint": str(conn.get("network_service_endpoint_name", ""))
                    or (names[-1] if names else ""),
        "endpoint_node": nodes_by_nsmgr.get(endpoint_nsmgr),
        "state": state,
        "mtu": int(conn.get("context", {}).get("MTU", 0)) or None,
        **_counters(conn),
        "client_addresses": list(ip.get("src_ip_addrs", [])),
        "endpoint_addresses": list(ip.get("dst_ip_addrs", [])),
        "path": names,
    }


def _nodes(snapshot: Snapshot, names: Sequence[str]) -> list[dict[str, Any]]:
    stale = set(snapshot.counters_stale)
    return [{
        "name": name,
        "nsmgr": {"name": _nsmgr_name(view), "url": view.source.nsmgr, "up": view.up,
                  "error": view.error},
        "forwarders": [{"name": f["name"], "url": f["url"], "up": f["name"] not in stale,
                        "wireguard": f.get("wireguard", ""),
                        "underlay_ip": f.get("underlay-ip", "")} for f in view.forwarders],
    } for view, name in zip(snapshot.nodes, names, strict=True)]


def _endpoint_node(record: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]],
                   seen: Mapping[str, str | None]) -> str | None:
    """The node serving an endpoint: the one whose forwarder's underlay IP is the host of the
    endpoint's URL (an nsmgr registers its endpoints with its own address), else the node
    where its connections end."""
    host = urlsplit(str(record.get("url", ""))).hostname
    for node in nodes:
        if host and any(f["underlay_ip"] == host for f in node["forwarders"]):
            return str(node["name"])
    return seen.get(str(record.get("name", "")))


def build(snapshot: Snapshot) -> dict[str, Any]:
    """The topology of ``snapshot`` (see the module docstring)."""
    names = _node_names(snapshot.nodes)
    nodes = _nodes(snapshot, names)
    nodes_by_nsmgr = {n["nsmgr"]["name"]: n["name"] for n in nodes if n["nsmgr"]["name"]}
    views: dict[str, list[dict[str, Any]]] = {}
    for view in snapshot.nodes:
        for conn in view.connections:
            views.setdefault(connections.connection_id(conn), []).append(conn)
    for hops in views.values():
        hops.sort(key=lambda c: int(c.get("path", {}).get("index", 0)))
    conns = sorted((_connection(v, nodes_by_nsmgr, snapshot.counters) for v in views.values()),
                   key=lambda c: (c["service"], c["client"], c["id"]))
    short = connections.short_ids(c["id"] for c in conns)
    for conn in conns:
        conn["short_id"] = short[conn["id"]]
    seen = {c["endpoint"]: c["endpoint_node"] for c in conns}
    endpoints: list[dict[str, Any]] = [{
        "name": str(e.get("name", "")),
        "services": list(e.get("network_service_names", [])),
        "url": str(e.get("url", "")),
        "node": _endpoint_node(e, nodes, seen),
        "registered": True,
        "expires": e.get("expiration_time"),
    } for e in snapshot.endpoints]
    registered = {e["name"] for e in endpoints}
    endpoints += [{"name": c["endpoint"], "services": [c["service"]], "url": "",
                   "node": c["endpoint_node"], "registered": False, "expires": None}
                  for c in conns if c["endpoint"] and c["endpoint"] not in registered]
    endpoints = sorted({e["name"]: e for e in endpoints}.values(), key=lambda e: str(e["name"]))
    clients = sorted({(c["client"], c["client_node"]) for c in conns if c["client"]},
                     key=lambda c: (c[0], c[1] or ""))
    return {
        "version": VERSION,
        "taken_at": snapshot.taken_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "domain": {"name": _domain(snapshot.endpoints),
                   "registry": {"url": snapshot.registry, "up": snapshot.registry_up,
                                "error": snapshot.registry_error}},
        "nodes": nodes,
        "endpoints": endpoints,
        "clients": [{"name": name, "node": node} for name, node in clients],
        "connections": conns,
    }


async def topology(registry: str, nodes: Sequence[NodeSource], timeout: float
                   ) -> dict[str, Any]:
    """:func:`collect` then :func:`build`: what ``graph -o json`` prints and the dashboard's
    ``/api/topology`` serves."""
    return build(await collect(registry, nodes, timeout))
