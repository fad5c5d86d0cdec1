"""Looking at a running fabric from outside: pings, monitor streams, registry lookups, waits.

* :func:`ping` sends one ICMP echo from inside a namespace (:class:`nsc.probe.Pinger`, no
  ``ping`` binary); :func:`wait_for` polls any async condition with a bounded deadline.
* :func:`monitor_connections` reads an nsmgr's connections (the initial state of its
  ``MonitorConnections`` stream); :func:`registered` asks a registry (or an nsmgr, which
  answers for its forwarders) whether a record exists.
* :func:`endpoint_address` / :func:`path_ids` read the JSON form of a connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from api.proto import connection_pb2_grpc
from api.proto.connection_pb2 import MonitorScopeSelector
from api.proto.registry_pb2 import NetworkServiceEndpoint
from lab.topology import netns_path
from nsc.probe import Pinger
from sdk.errors import DeadlineExceeded, FabricError
from sdk.grpcutil import channel
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Query, RegistryChain
from sdk.registry.kinds import ENDPOINT


async def ping(netns: str, address: str, wait: float = 1.0) -> bool:
    """One ICMP(v6) echo from inside the named namespace to ``address``, answered in ``wait``."""
    if not address:
        return False
    pinger = Pinger(netns_path(netns))
    try:
        return await pinger.ping(address, wait=wait)
    finally:
        pinger.close()


async def wait_for(
    what: str, ready: Callable[[], Awaitable[bool]], seconds: float, every: float = 0.05
) -> float:
    """Poll ``ready()`` until it is true; returns the seconds it took. DeadlineExceeded (naming
    ``what``) after ``seconds``."""
    start = time.monotonic()
    deadline = start + seconds
    while not await ready():
        if time.monotonic() > deadline:
            raise DeadlineExceeded(f"{what}: not within {seconds:g} s")
        await asyncio.sleep(every)  # polling a bounded condition, not synchronisation by time
    return time.monotonic() - start


async def monitor_connections(nsmgr_socket: Path, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The connections an nsmgr knows (JSON dicts), from its monitor stream's initial state."""
    async with channel(f"unix://{nsmgr_socket}") as ch:
        stub = connection_pb2_grpc.MonitorConnectionStub(ch)
        stream = stub.MonitorConnections(MonitorScopeSelector(), timeout=timeout)
        async for event in stream:
            stream.cancel()
            return [
                json_format.MessageToDict(conn, preserving_proto_field_name=True)
                for conn in event.connections.values()
            ]
    return []


async def registered(address: str, template: NetworkServiceEndpoint, timeout: float = 5.0) -> bool:
    """Whether the registry (or nsmgr) at ``address`` has an endpoint matching ``template``."""
    async with channel(address) as ch:
        chain: RegistryChain[NetworkServiceEndpoint] = RegistryChain([RemoteRegistry(ENDPOINT, ch)])
        try:
            async with asyncio.timeout(timeout):
                async for _event in chain.find(Query(template)):
                    return True
        except (FabricError, TimeoutError):
            return False
    return False


def _address(conn: dict[str, Any], key: str, version: int) -> str:
    addrs = conn.get("context", {}).get("ip_context", {}).get(key, [])
    for cidr in addrs:
        address = str(cidr).split("/")[0]
        if (":" in address) == (version == 6):
            return address
    return ""


def endpoint_address(conn: dict[str, Any], version: int = 4) -> str:
    """The endpoint's address of one IP version in a connection (JSON dict), or ''."""
    return _address(conn, "dst_ip_addrs", version)


def client_address(conn: dict[str, Any], version: int = 4) -> str:
    """The client's address of one IP version in a connection (JSON dict), or ''."""
    return _address(conn, "src_ip_addrs", version)


def path_ids(conn: dict[str, Any]) -> list[str]:
    """The ids of a connection's path segments (JSON dict), in order."""
    return [str(s.get("id", "")) for s in conn.get("path", {}).get("path_segments", [])]
