"""nsmctl status, close, check and connect against real gRPC servers.

A node is served from a background loop: a forwarder part that is the real thing down to the
kernel (the forwarder's :class:`forwarder.xconnect.Xconnect` on the fake kernel, its live
:class:`forwarder.counters.Counters` service on a Unix socket) and an nsmgr stand-in that serves
what ``status`` asks an nsmgr for (NSM's connection monitor with a connection as an nsmgr sees
it, and the forwarder's registration over the registry API). A real registry answers where a
test points ``--nsmgr`` at the wrong component. The CLI runs in the test's thread
(:func:`nsmctl.app.main`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from api.mechanisms.kernel import KernelMechanism
from api.proto import connection_pb2_grpc
from api.proto.connection_pb2 import (
    INITIAL_STATE_TRANSFER,
    Connection,
    ConnectionEvent,
    MonitorScopeSelector,
    PathSegment,
)
from api.proto.connection_pb2 import (
    Path as ConnPath,
)
from api.proto.networkservice_pb2 import NetworkServiceRequest
from api.proto.registry_pb2 import NetworkServiceEndpoint
from forwarder.counters import Counters, add_counters
from forwarder.kernel import FakeKernel, LinkStats
from forwarder.ports import PortPool
from forwarder.specs import Node
from forwarder.wireguard.fake import FakeWireGuard
from forwarder.xconnect import Xconnect
from nsmctl import node_cmds
from registry.app import Registry
from registry.store import open_store
from sdk.grpcutil import parse_address, serve, stop
from sdk.networkservice.core import NetworkServiceChain
from sdk.networkservice.metadata import Metadata
from sdk.registry.core import RegistryChain
from sdk.registry.kinds import ENDPOINT, SERVICE
from sdk.registry.memory import MemoryStore
from sdk.registry.persist import Persist
from sdk.registry.server import add_registry
from tests.cli import nsmctl
from tests.integration.background import BackgroundLoop
from tests.unit.far_side import FarSide

HOST, CLIENT_NS, ENDPOINT_NS = "/var/run/netns/host", "/var/run/netns/cli", "/var/run/netns/nse"
CLIENT_ID = "5f3c9a71-0d4e-4c2b-9a55-client"   # the client's path segment: the one ID
NSMGR_SEGMENT = "9e1d4b20-nsmgr-hop"           # what the nsmgr calls the same connection
FORWARDER_SEGMENT = "c41ab8e2-forwarder-hop"   # what the forwarder calls it


class NsmgrMonitor(connection_pb2_grpc.MonitorConnectionServicer):
    """The nsmgr's connection monitor: the connection as the nsmgr sees it (its hop is 1), with
    the counters the forwarder wrote at the last refresh."""

    def __init__(self) -> None:
        self.mtu = 1500

    async def MonitorConnections(
        self, request: MonitorScopeSelector, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[ConnectionEvent]:
        conn = Connection(id=NSMGR_SEGMENT, network_service="secure-db",
                          network_service_endpoint_name="db-1",
                          path=ConnPath(index=1, path_segments=[
                              PathSegment(id=CLIENT_ID, name="nsc"),
                              PathSegment(id=NSMGR_SEGMENT, name="nsmgr-n1"),
                              PathSegment(id=FORWARDER_SEGMENT, name="fwd-n1", metrics={
                                  "client_rx_bytes": "0", "client_tx_bytes": "0",
                                  "mtu": "1500"}),
                          ]))
        conn.context.MTU = self.mtu
        conn.context.ip_context.src_ip_addrs.append("10.0.0.1/32")
        conn.context.ip_context.dst_ip_addrs.append("10.0.0.2/32")
        yield ConnectionEvent(type=INITIAL_STATE_TRANSFER, connections={conn.id: conn})


@dataclass
class FabricNode:
    root: Path
    kernel: FakeKernel
    xconnect: Xconnect
    chain: NetworkServiceChain
    monitor: NsmgrMonitor
    background: BackgroundLoop
    servers: list[tuple[grpc.aio.Server, str]] = field(default_factory=list)

    @property
    def nsmgr(self) -> str:
        return f"unix://{self.root}/nsmgr.sock"

    @property
    def forwarder(self) -> str:
        return f"unix://{self.root}/forwarder.sock"

    @property
    def registry(self) -> str:
        return f"unix://{self.root}/registry.sock"

    def traffic(self, rx: int, tx: int) -> None:
        self.kernel.count_traffic(CLIENT_NS, "nsm0", LinkStats(rx, tx, 1, 1))


async def _start(node: FabricNode) -> None:
    reply = await node.chain.run_request(NetworkServiceRequest(
        connection=Connection(id=FORWARDER_SEGMENT),
        mechanism_preferences=[KernelMechanism(CLIENT_NS, "nsm0").to_proto()]))
    assert reply.context.MTU == 1500
    forwarder = grpc.aio.server()
    add_counters(forwarder, Counters("fwd-n1", node.xconnect.counters))
    endpoints = RegistryChain([Persist(ENDPOINT, MemoryStore())])
    await endpoints.register(NetworkServiceEndpoint(
        name="fwd-n1", network_service_names=["forwarder"], url=node.forwarder))
    nsmgr = grpc.aio.server()
    connection_pb2_grpc.add_MonitorConnectionServicer_to_server(node.monitor, nsmgr)
    add_registry(nsmgr, RegistryChain([Persist(SERVICE, MemoryStore())]), endpoints)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, nsmgr)
    registry = Registry(open_store("memory://"))
    await registry.start([parse_address(node.registry)])
    for server, url in ((forwarder, node.forwarder), (nsmgr, node.nsmgr)):
        await serve(server, [parse_address(url)], insecure_tcp=False)
        node.servers.append((server, url))
    node.servers.append((registry, node.registry))  # type: ignore[arg-type]


async def _stop(node: FabricNode) -> None:
    for server, url in reversed(node.servers):
        if isinstance(server, Registry):
            await server.stop(0)
        else:
            await stop(server, [parse_address(url)], 0)


@pytest.fixture
def node(monkeypatch: pytest.MonkeyPatch) -> Iterator[FabricNode]:
    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="nsmst-"))
    monkeypatch.setattr(node_cmds, "CLIENTS_DIR", root / "clients")
    for name in ("NSMCTL_NSMGR", "NSMCTL_REGISTRY"):
        monkeypatch.delenv(name, raising=False)
    kernel = FakeKernel()
    for ns in (HOST, CLIENT_NS, ENDPOINT_NS):
        kernel.add_netns(ns)
    kernel.add_link(HOST, "eth0", "veth", up=True)
    xconnect = Xconnect(kernel, FakeWireGuard(kernel), Node("fwd-n1", "192.0.2.1", "eth0", HOST),
                        PortPool(range(51820, 51830)))
    chain = NetworkServiceChain([
        Metadata(), xconnect, FarSide(KernelMechanism(ENDPOINT_NS, "nsm0").to_proto(),
                                      "10.0.0.1/32", "10.0.0.2/32"),
    ])
    fabric = FabricNode(root, kernel, xconnect, chain, NsmgrMonitor(), BackgroundLoop("node"))
    try:
        fabric.background.run(_start(fabric))
        yield fabric
    finally:
        fabric.background.run(_stop(fabric))
        fabric.background.close()
        shutil.rmtree(root, ignore_errors=True)




def _row(out: str) -> list[str]:
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("ID"))
    return lines[header + 1].split()


# -- one ID, live counters ------------------------------------------------------------------------


def test_status_shows_the_clients_id_and_counters_read_now(node: FabricNode) -> None:
    node.traffic(1024, 2048)
    first = nsmctl("status", "--nsmgr", node.nsmgr)
    assert first.code == 0, first.err
    row = _row(first.out)
    assert row[0] == CLIENT_ID[:8]                     # the client's ID, not the nsmgr's hop
    assert "1.0KiB/2.0KiB" in row and "veth" in row
    assert f"  {CLIENT_ID[:8]}: nsc → nsmgr-n1 → fwd-n1" in first.out.splitlines()

    node.traffic(10 * 1024, 20 * 1024)                 # traffic flows; no refresh happened
    again = nsmctl("status", "--nsmgr", node.nsmgr)
    assert "10.0KiB/20.0KiB" in _row(again.out)

    data = json.loads(nsmctl("status", "--nsmgr", node.nsmgr, "-o", "json").out)
    conn, = data["connections"]
    assert conn["connection_id"] == CLIENT_ID
    assert conn["path"]["path_segments"][2]["metrics"]["client_rx_bytes"] == str(10 * 1024)
    assert data["counters_stale"] == []


def test_status_says_when_counters_are_not_live(node: FabricNode) -> None:
    node.background.run(stop(node.servers[0][0], [parse_address(node.forwarder)], 0))
    shown = nsmctl("status", "--nsmgr", node.nsmgr)
    assert shown.code == 0, shown.err
    assert "counters of forwarder fwd-n1 are as of the last refresh" in shown.out
    assert "0B/0B" in _row(shown.out)


def _client(node: FabricNode, conn_id: str) -> subprocess.Popen[bytes]:
    """A stand-in for a client started by ``nsmctl connect``: its state file, removed when it
    is told to stop (as nsc does)."""
    node_cmds.CLIENTS_DIR.mkdir(exist_ok=True)
    state = node_cmds.CLIENTS_DIR / f"{conn_id}.json"
    script = textwrap.dedent(f"""
        import json, os, pathlib, signal, sys, time
        state = pathlib.Path({str(state)!r})
        def stop(*_):
            state.unlink(missing_ok=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        conn = {{"id": {conn_id!r}, "path": {{"index": 0,
                 "path_segments": [{{"id": {conn_id!r}, "name": "nsc"}}]}}}}
        state.write_text(json.dumps({{"pid": os.getpid(), "connections": [conn]}}))
        while True:
            time.sleep(1)
    """)
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 10
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the stand-in writes its state file at start
    if not state.exists():
        process.kill()
        raise AssertionError("the client stand-in did not start")
    return process


def test_close_takes_the_id_status_shows(node: FabricNode) -> None:
    client = _client(node, CLIENT_ID)
    other = _client(node, CLIENT_ID[:6] + "ffff-other")
    try:
        shown = _row(nsmctl("status", "--nsmgr", node.nsmgr).out)[0]
        ambiguous = nsmctl("close", CLIENT_ID[:4])
        assert ambiguous.code == 1
        assert "matches 2 connections" in ambiguous.err and "give more of the ID" in ambiguous.err
        closed = nsmctl("close", shown)
        assert closed.code == 0, closed.err
        assert closed.out.strip() == f"connection {CLIENT_ID} closed"
        assert client.wait(10) == 0
        missing = nsmctl("close", shown)
        assert missing.code == 1 and "'nsmctl status' lists them" in missing.err
    finally:
        for process in (client, other):
            process.kill()
            process.wait()


# -- check ----------------------------------------------------------------------------------------


def test_check_compares_each_connections_mtu(node: FabricNode) -> None:
    good = nsmctl("--registry", node.registry, "check", "--nsmgr", node.nsmgr)
    assert "ok   MTU: 1 connection hop(s), MTU 1500" in good.out.splitlines()
    node.monitor.mtu = 1400                            # the path says 1400, the forwarder set 1500
    bad = nsmctl("--registry", node.registry, "check", "--nsmgr", node.nsmgr)
    assert bad.code == 1
    line, = [x for x in bad.out.splitlines() if " MTU:" in x]
    assert line.startswith("FAIL MTU:") and "context 1400, programmed 1500" in line


def test_pointing_at_the_registry_is_explained(node: FabricNode) -> None:
    checked = nsmctl("--registry", node.registry, "check", "--nsmgr", node.registry)
    assert checked.code == 1
    assert (f"FAIL nsmgr: {node.registry} answers but is not an nsmgr"
            in checked.out), checked.out
    assert "bug" not in checked.out + checked.err
    status = nsmctl("status", "--nsmgr", node.registry)
    assert status.code == 1
    assert status.err.startswith(f"error: {node.registry} answers but is not an nsmgr")


# -- connect: errors in the user's terms ----------------------------------------------------------


@pytest.mark.parametrize(("args", "option", "says"), [
    (("--netns", "/tmp"), "--netns", "'/tmp' is not a network namespace"),
    (("--netns", "no-such-ns"), "--netns", "does not exist"),
    (("--netns", "/proc/self/ns/net", "--nsmgr", "ftp://x"), "--nsmgr", "unknown scheme"),
    (("--netns", "/proc/self/ns/net", "--svid-dir", "/nonexistent", "--nsmgr-id",
      "spiffe://example.org/nsmgr/n1"), "--svid-dir", "nsmctl ca issue"),
    (("--netns", "/proc/self/ns/net", "--nsmgr-id", "nsmgr-n1"), "--nsmgr-id",
     "must start with 'spiffe://'"),
])
def test_connect_usage_errors_name_the_option(
    node: FabricNode, args: tuple[str, ...], option: str, says: str
) -> None:
    result = nsmctl("connect", "kernel://secure-db/nsm0", *args)
    assert result.code == 2, result.err
    assert option in result.err and says in result.err
    assert "Traceback" not in result.err and "parameters[" not in result.err


def test_connect_to_nothing_says_so_without_grpc_text(node: FabricNode) -> None:
    result = nsmctl("connect", "kernel://secure-db/nsm0", "--netns", "/proc/self/ns/net",
                    "--nsmgr", f"unix://{node.root}/nothing.sock")
    assert result.code == 1
    assert result.err == (f"error: cannot reach nsmgr at unix://{node.root}/nothing.sock: is it "
                          "running? (set --nsmgr or NSMCTL_NSMGR)\n")
    assert not list(node_cmds.CLIENTS_DIR.glob("*")) if node_cmds.CLIENTS_DIR.exists() else True
