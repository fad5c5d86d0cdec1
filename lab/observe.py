"""Looking at a running fabric from outside: pings, monitor streams, registry lookups, waits.

* :func:`ping` sends one ICMP echo from inside a namespace (:class:`nsc.probe.Pinger`, no
  ``ping`` binary); :func:`df_ping` one of a given size with don't-fragment set (the ``ping``
  binary) and :func:`check_path_mtu` checks a vWire's MTU with it; :func:`wait_for` polls any
  async condition with a bounded deadline.
* :func:`monitor_connections` reads an nsmgr's connections (the initial state of its
  ``MonitorConnections`` stream) over its Unix socket: ids, states, addresses, but every path
  token only as its fingerprint (``sha256:`` + 16), as every local caller sees them.
* :func:`signed_connections` reads the same stream with the tokens themselves: it calls the
  nsmgr's TCP address over mTLS, presenting an SVID (the lab uses the nsmgr's own, so every
  connection the nsmgr is on is visible). The TCP address lives in the node's namespace, so the
  connection is made there (:mod:`sdk.netns`, no fork) and handed to gRPC through a Unix socket
  in a private temporary directory (:func:`_tcp_in_netns`); TLS runs end to end between this
  process and the nsmgr. The tokens stay in this process's memory: nothing here logs them.
* :func:`registered` asks a registry (or an nsmgr, which answers for its forwarders) whether a
  record exists.
* :func:`endpoint_address` / :func:`path_ids` read the JSON form of a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from api.proto import connection_pb2_grpc
from api.proto.connection_pb2 import MonitorScopeSelector
from api.proto.registry_pb2 import NetworkServiceEndpoint
from lab.topology import netns_path
from nsc.probe import Pinger
from sdk.errors import DeadlineExceeded, FabricError, InvalidArgument
from sdk.grpcutil import channel, parse_address
from sdk.netns import socket_in
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Query, RegistryChain
from sdk.registry.kinds import ENDPOINT
from sdk.security.source import FileSvidSource
from sdk.security.tls import secure_channel

_BRIDGE_CHUNK = 65536


async def ping(netns: str, address: str, wait: float = 1.0) -> bool:
    """One ICMP(v6) echo from inside the named namespace to ``address``, answered in ``wait``."""
    if not address:
        return False
    pinger = Pinger(netns_path(netns))
    try:
        return await pinger.ping(address, wait=wait)
    finally:
        pinger.close()


async def df_ping(netns: str, address: str, size: int, wait: float = 2.0) -> bool:
    """One ``ping`` of an IP packet of ``size`` bytes with don't-fragment set, from ``netns``."""
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, "ping", "-n", "-q", "-c1", f"-W{wait:g}", "-M", "do",
        "-s", str(size - 28), address,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    async with asyncio.timeout(wait + 10):
        return await process.wait() == 0


async def check_path_mtu(netns: str, address: str, mtu: int, attempts: int = 3) -> None:
    """FabricError unless a DF ping of ``mtu`` bytes to ``address`` passes (within a few
    attempts: a busy machine may drop one) and one of ``mtu + 1`` bytes does not."""
    for _ in range(attempts):
        if await df_ping(netns, address, mtu):
            break
    else:
        raise FabricError(f"a don't-fragment ping of {mtu} bytes (the vWire's MTU) from {netns} "
                          f"to {address} did not pass: the path carries less")
    if await df_ping(netns, address, mtu + 1, wait=1.0):
        raise FabricError(f"a don't-fragment ping of {mtu + 1} bytes from {netns} to "
                          f"{address} passed: the vWire's MTU {mtu} is not its limit")


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


async def _initial_state(ch: grpc.aio.Channel, timeout: float) -> list[dict[str, Any]]:
    """The connections in the ``INITIAL_STATE_TRANSFER`` of a monitor stream on ``ch``."""
    stub = connection_pb2_grpc.MonitorConnectionStub(ch)
    stream = stub.MonitorConnections(MonitorScopeSelector(), timeout=timeout)
    async for event in stream:
        stream.cancel()
        return [
            json_format.MessageToDict(conn, preserving_proto_field_name=True)
            for conn in event.connections.values()
        ]
    return []


async def monitor_connections(nsmgr_socket: Path, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The connections an nsmgr knows (JSON dicts), from its monitor stream's initial state, asked
    over its Unix socket: path tokens show as fingerprints (use :func:`signed_connections` for
    the tokens)."""
    async with channel(f"unix://{nsmgr_socket}") as ch:
        return await _initial_state(ch, timeout)


async def signed_connections(
    netns: str, address: str, svid_dir: Path, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """The connections (JSON dicts, path tokens included) that the nsmgr listening on TCP
    ``address`` in namespace ``netns`` shows to the identity in ``svid_dir``, asked over mTLS:
    those whose signed path names that identity (all of an nsmgr's own when it is its SVID)."""
    source = FileSvidSource(svid_dir)
    async with _tcp_in_netns(netns, address) as local:
        ch = secure_channel(parse_address(f"unix://{local}"), source)
        try:
            return await _initial_state(ch, timeout)
        finally:
            await ch.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until EOF, then half-close ``writer``."""
    try:
        while data := await reader.read(_BRIDGE_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


@contextlib.asynccontextmanager
async def _tcp_in_netns(netns: str, address: str) -> AsyncIterator[Path]:
    """A Unix socket (in a temporary directory only root may enter) whose every connection is
    bridged to a new TCP connection to ``address`` made inside namespace ``netns``. Everything
    (listener, connections, tasks) is gone when the block ends."""
    target = parse_address(address)
    if target.scheme != "tcp":
        raise InvalidArgument("address", f"{address!r}: use tcp://host:port")
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def bridge(local_reader: asyncio.StreamReader,
                     local_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        remote_writer: asyncio.StreamWriter | None = None
        try:
            sock = await socket_in(netns_path(netns),
                                   lambda: socket.socket(family, socket.SOCK_STREAM))
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, (target.host, target.port))
            except BaseException:
                sock.close()
                raise
            remote_reader, remote_writer = await asyncio.open_connection(sock=sock)
            await asyncio.gather(_pipe(local_reader, remote_writer),
                                 _pipe(remote_reader, local_writer))
        except (OSError, FabricError):
            pass  # the local side just closes: gRPC reports the call UNAVAILABLE
        except asyncio.CancelledError:
            # Only the block's exit cancels a bridge; end normally, because asyncio's server
            # reports a handler task that ends cancelled as an error ("Exception in callback").
            pass
        finally:
            if remote_writer is not None:
                remote_writer.close()
            local_writer.close()
            tasks.discard(task)

    with tempfile.TemporaryDirectory(prefix="vwire-observe-") as directory:  # mode 0700
        path = Path(directory) / "bridge.sock"
        server = await asyncio.start_unix_server(bridge, path=str(path))
        try:
            yield path
        finally:
            server.close()
            await server.wait_closed()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # each ends, not cancelled


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
