"""Tunnels prepared while the request is downstream (``Xconnect(prepare_ahead=True)``), with real
namespaces and real wireguard-go: the client side's tunnel is in the client's namespace before
the far side answered, the endpoint side's in the endpoint's namespace once its namespace is
known (or taken from the daemons pooled there); a refused, a cancelled and a mismatched request
leave no link, daemon, socket or port.

The chains are :mod:`tests.privileged.test_forwarder_chain`'s (client-side forwarder on node A,
endpoint-side forwarder on node B, a stub endpoint); the stub here waits (bounded) until the
preparations it expects exist before it answers, refuses or blocks, so each test sees them made.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from api.mechanisms.wireguard import Reach
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from forwarder.kernel import real_kernel
from forwarder.specs import Node
from forwarder.vwire import Leftover, VWire, find_leftovers
from forwarder.wireguard import UserspaceBackend, WireGuardBackend, socket_path
from forwarder.wireguard.pool import POOL_ALIAS
from sdk.errors import PermissionDenied
from sdk.networkservice.core import NSCursor

from .conftest import netns_path, run
from .test_forwarder_chain import FarSide, Hop, Remote, client_request, forwarder
from .test_vwire_local import kernel_state, ping
from .test_vwire_remote import Lab, backend, lab, wait_until, wg_processes

__all__ = ["backend", "lab"]

ENDPOINT_NAME = "nse-1"


async def marked(*names: str) -> list[Leftover]:
    """The vWire-marked interfaces in the lab namespaces ``names``."""
    return await find_leftovers(real_kernel(), [netns_path(n) for n in names])


@dataclass
class Stub(FarSide):
    """:class:`FarSide` that first waits until a marked interface exists in each namespace of
    ``expect`` (recording what it saw), then answers (with ``mtu`` in the context if set),
    refuses (``refuse``) or blocks until cancelled (``block``)."""

    expect: tuple[str, ...] = ()
    mtu: int = 0
    refuse: bool = False
    block: bool = False
    seen: dict[str, list[Leftover]] = field(default_factory=dict)
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        for ns in self.expect:
            found: list[Leftover] = []

            async def present(ns: str = ns, found: list[Leftover] = found) -> bool:
                found[:] = await marked(ns)
                return bool(found)

            assert await _until(present), f"no prepared tunnel in {ns}"
            self.seen[ns] = list(found)
        self.entered.set()
        if self.refuse:
            self.requests += 1
            raise PermissionDenied("the endpoint refuses this client")
        if self.block:
            await asyncio.Event().wait()  # until the test cancels the request
        conn = await super().request(request, next)
        conn.network_service_endpoint_name = ENDPOINT_NAME
        if self.mtu:
            conn.context.MTU = self.mtu
        return conn


async def _until(check: object, limit: float = 5.0) -> bool:
    """Ask the async ``check`` every 20 ms until it holds or ``limit`` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():  # type: ignore[operator]
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@pytest.fixture
async def fabric(lab: Lab, backend: WireGuardBackend) -> AsyncIterator[tuple[Remote, Stub]]:
    async with _fabric(lab, backend) as made:
        yield made


@contextlib.asynccontextmanager
async def _fabric(lab: Lab, backend: WireGuardBackend) -> AsyncIterator[tuple[Remote, Stub]]:
    """The two forwarders of ``remote_forwarders`` (their nodes' underlay MTU known, as the
    forwarder process reads it at start) with :class:`Stub` as the endpoint."""
    stub = Stub(netns_path(lab.endpoint))
    reach = Reach(underlay_mtu=1500)
    node_b = Node("fwd-b", "10.99.0.2", "ub", netns_path(lab.node_b), reach=reach)
    side_b = forwarder("fwd-b", node_b, backend, range(51840, 51850), stub, recover=True)
    node_a = Node("fwd-a", "10.99.0.1", "ua", netns_path(lab.node_a), reach=reach)
    side_a = forwarder("fwd-a", node_a, backend, range(51820, 51830), Hop(side_b.chain),
                       recover=True)
    remote = Remote(side_a, side_b, stub)
    try:
        yield remote, stub
    finally:
        for side in (remote.client_side, remote.endpoint_side):
            if side.recovery is not None:
                await side.recovery.close()


def request(lab: Lab, cid: str = "conn-1") -> NetworkServiceRequest:
    req = client_request(lab)
    req.connection.id = cid
    req.connection.network_service_endpoint_name = ENDPOINT_NAME
    return req


async def assert_nothing_left(lab: Lab, remote: Remote, backend: WireGuardBackend,
                        before: dict[str, str], daemons: set[str]) -> None:
    """No link, address, route, daemon, control socket, UDP socket or tunnel port is left (the
    daemons ``daemons`` are waited for: their ends are reaped behind the calls)."""
    assert await wait_until(lambda: not wg_processes(daemons))
    names = (lab.node_a, lab.node_b, lab.client, lab.endpoint)
    assert kernel_state(*names) == before
    assert not await marked(*names)
    assert not getattr(backend, "interfaces", list)()
    assert not [name for name in daemons if socket_path(name).exists()]
    for ns in (lab.node_a, lab.node_b):  # wireguard-go binds its port in the underlay
        assert run("ss", "-Hlun", netns=ns).stdout.strip() == ""
    for side in (remote.client_side, remote.endpoint_side):
        ports = side.xconnect.ports
        assert [ports.take(f"probe-{i}") for i in range(len(ports.ports))]  # all free again
        for i in range(len(ports.ports)):
            ports.give_back(f"probe-{i}")
        assert len(side.metadata) == 0 and side.live_names() == []


async def test_client_tunnel_is_ready_before_the_answer_endpoint_learns_its_namespace(
    lab: Lab, fabric: tuple[Remote, Stub], backend: WireGuardBackend
) -> None:
    remote, stub = fabric
    names = (lab.node_a, lab.node_b, lab.client, lab.endpoint)
    before = kernel_state(*names)
    a, b = remote.client_side, remote.endpoint_side
    # first: the client side prepares in the client's namespace, the endpoint side in node B
    stub.expect = (lab.client, lab.node_b)
    made: list[Connection] = []
    try:
        first = await a.chain.run_request(request(lab, "conn-1"))
        made.append(first)
        prepared = stub.seen[lab.client][0]
        assert prepared.connection_id == f"fwd-a/{first.path.path_segments[0].id}"
        assert prepared.mtu == 1440 and prepared.ifname == prepared.wg_name  # not renamed yet
        assert first.context.MTU == 1440
        assert ping(lab.client, "172.16.0.2", 1412) == "ok"  # exactly the MTU: 1440 - 28
        assert ping(lab.client, "172.16.0.2", 1413) == "EMSGSIZE"
        # the prepared interfaces, renamed and configured, are the vWires (not made again)
        assert wg_name(a.vwire(first)) == prepared.wg_name
        assert wg_name(b.vwire(first)) == stub.seen[lab.node_b][0].wg_name
        daemons = set(a.live_names() + b.live_names())
        await a.chain.run_close(made.pop())
        # second: node B learnt the endpoint's namespace and prepares its tunnel in it
        stub.expect = (lab.client, lab.endpoint)
        second = await a.chain.run_request(request(lab, "conn-2"))
        made.append(second)
        assert stub.seen[lab.endpoint][0].connection_id.startswith("fwd-b/")
        assert wg_name(b.vwire(second)) == stub.seen[lab.endpoint][0].wg_name
        assert ping(lab.endpoint, "172.16.0.1", 1412) == "ok"
        assert ping(lab.endpoint, "172.16.0.1", 1413) == "EMSGSIZE"
        daemons |= set(a.live_names() + b.live_names())
    finally:
        for conn in made:
            await a.chain.run_close(conn)
    assert len(daemons) == 4
    await assert_nothing_left(lab, remote, backend, before, daemons)


def wg_name(vwire: VWire) -> str:
    assert vwire.wireguard is not None
    return vwire.wireguard[0]


def _prepared_names(stub: Stub) -> set[str]:
    return {leftover.wg_name or "" for seen in stub.seen.values() for leftover in seen}


async def test_refused_request_removes_both_preparations(
    lab: Lab, fabric: tuple[Remote, Stub], backend: WireGuardBackend
) -> None:
    remote, stub = fabric
    before = kernel_state(lab.node_a, lab.node_b, lab.client, lab.endpoint)
    stub.expect, stub.refuse = (lab.client, lab.node_b), True
    with pytest.raises(PermissionDenied, match="refuses"):
        await remote.client_side.chain.run_request(request(lab))
    daemons = _prepared_names(stub)
    assert len(daemons) == 2  # one prepared on each side, both seen while the request was out
    await assert_nothing_left(lab, remote, backend, before, daemons)


async def test_cancelled_request_removes_both_preparations(
    lab: Lab, fabric: tuple[Remote, Stub], backend: WireGuardBackend
) -> None:
    remote, stub = fabric
    before = kernel_state(lab.node_a, lab.node_b, lab.client, lab.endpoint)
    stub.expect, stub.block = (lab.client, lab.node_b), True
    pending = asyncio.create_task(remote.client_side.chain.run_request(request(lab)))
    entered = asyncio.create_task(stub.entered.wait())
    await asyncio.wait((pending, entered), timeout=10, return_when=asyncio.FIRST_COMPLETED)
    entered.cancel()
    assert stub.entered.is_set(), pending.exception() if pending.done() else "stub not reached"
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    daemons = _prepared_names(stub)
    assert len(daemons) == 2
    await assert_nothing_left(lab, remote, backend, before, daemons)


async def test_other_mtu_in_the_answer_discards_the_preparations_and_stays_exact(
    lab: Lab, fabric: tuple[Remote, Stub], backend: WireGuardBackend
) -> None:
    remote, stub = fabric
    before = kernel_state(lab.node_a, lab.node_b, lab.client, lab.endpoint)
    a, b = remote.client_side, remote.endpoint_side
    stub.expect, stub.mtu = (lab.client, lab.node_b), 1300  # the endpoint caps the MTU
    conn = await a.chain.run_request(request(lab))
    try:
        prepared = _prepared_names(stub)
        assert conn.context.MTU == 1300
        assert ping(lab.client, "172.16.0.2", 1272) == "ok"  # 1300 - 28
        assert ping(lab.client, "172.16.0.2", 1273) == "EMSGSIZE"
        assert ping(lab.endpoint, "172.16.0.1", 1272) == "ok"
        assert ping(lab.endpoint, "172.16.0.1", 1273) == "EMSGSIZE"
        # each side made its tunnel again at 1300: one daemon each, the prepared ones ended
        running = set(a.live_names() + b.live_names())
        assert len(running) == 2 and sorted(getattr(backend, "interfaces", list)()) == sorted(
            running)
        assert await wait_until(lambda: not wg_processes(prepared - running))
    finally:
        await a.chain.run_close(conn)
    await assert_nothing_left(lab, remote, backend, before, prepared | running)


async def test_a_tunnel_pooled_in_the_endpoint_namespace_carries_traffic_at_the_exact_mtu(
    lab: Lab,
) -> None:
    pooled_backend = UserspaceBackend(pool_size=1, pool_namespaces=1)
    try:
        async with _fabric(lab, pooled_backend) as (remote, _):
            await _pooled_connection_passes_traffic(lab, remote, pooled_backend)
    finally:
        await pooled_backend.close()
    for ns in (lab.endpoint, lab.node_b, lab.client, lab.node_a):
        assert POOL_ALIAS not in run("ip", "-o", "link", netns=ns).stdout
        assert run("ss", "-Hlun", netns=ns).stdout.strip() == ""


async def _pooled_connection_passes_traffic(
    lab: Lab, remote: Remote, backend: UserspaceBackend
) -> None:
    a = remote.client_side
    # the first teaches node B the namespace, the second asks the pool for a device there
    for cid in ("conn-1", "conn-2"):
        await a.chain.run_close(await a.chain.run_request(request(lab, cid)))
    underlay = netns_path(lab.node_b)
    await asyncio.wait_for(backend.pool.filled(underlay, netns_path(lab.endpoint)), 20)
    ready = await real_kernel().list_links(netns_path(lab.endpoint), alias_prefix=POOL_ALIAS)
    assert len(ready) == 1 and ready[0].mtu == 1440
    index = run("cat", f"/sys/class/net/{ready[0].name}/ifindex", netns=lab.endpoint).stdout
    conn = await a.chain.run_request(request(lab, "conn-3"))
    try:
        # the endpoint's interface is the pooled TUN, renamed where it was
        assert run("cat", "/sys/class/net/nse0/ifindex", netns=lab.endpoint).stdout == index
        assert conn.context.MTU == 1440
        for ns, far in ((lab.client, "172.16.0.2"), (lab.endpoint, "172.16.0.1")):
            assert ping(ns, far, 1412) == "ok"  # exactly the MTU: 1440 - 28
            assert ping(ns, far, 1413) == "EMSGSIZE"
    finally:
        await a.chain.run_close(conn)
