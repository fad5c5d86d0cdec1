"""Xconnect's refresh rule and restart recovery (``forwarder.restart``) on the fake kernel.

A wireguard-go restart is simulated the way the real backend leaves things: the renamed,
configured link disappears and a bare ``tun`` link under the WireGuard name appears, DOWN, in
the workload's namespace; then the backend's event is delivered.
"""

from __future__ import annotations

import asyncio

import pytest

from api.mechanisms.kernel import KernelMechanism, is_kernel
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from forwarder.kernel import FakeKernel
from forwarder.ports import PortPool
from forwarder.restart import LiveVWire, LiveVWires, RestartRecovery, wireguard_name
from forwarder.specs import Node
from forwarder.vwire import (
    Attachment,
    LocalVWireSpec,
    RemoteVWireSpec,
    RouteSpec,
    VWire,
    WireGuardPeerSpec,
    program_remote,
)
from forwarder.vwire.naming import marker
from forwarder.wireguard import WgProcessEvent, generate_keypair
from forwarder.wireguard.fake import FakeWireGuard
from forwarder.xconnect import LOST, VWIRE, Xconnect, _unchanged
from sdk.networkservice.core import NetworkServiceChain
from sdk.networkservice.metadata import Metadata
from tests.unit.far_side import FarSide

NODE, CLIENT, ENDPOINT = "/var/run/netns/node", "/var/run/netns/cli", "/var/run/netns/nse"
PRIVATE, _ = generate_keypair()
_, PEER_PUBLIC = generate_keypair()


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    for ns in (NODE, CLIENT, ENDPOINT):
        k.add_netns(ns)
    k.add_link(NODE, "eth0", "veth", up=True, mtu=1500)
    return k


def remote_spec() -> RemoteVWireSpec:
    return RemoteVWireSpec(
        connection_id="fwd/conn-r",
        workload=Attachment(CLIENT, "nsm0", ("10.0.0.1/32",), (RouteSpec("10.5.0.0/16"),)),
        peer=WireGuardPeerSpec(PEER_PUBLIC, ("192.0.2.2", 51820), ("10.0.0.2/32",)),
        private_key=PRIVATE,
        underlay_ifname="eth0",
        underlay_netns=NODE,
    )


async def simulate_restart(kernel: FakeKernel, vwire: VWire, wg_name: str) -> None:
    """What the backend leaves after a restart: a bare tun named ``wg_name``, DOWN."""
    end = vwire.ends[0]
    await kernel.delete_link(end.netns, end.ifname)
    kernel.add_link(end.netns, wg_name, "tun", mtu=1420)


async def settle(recovery: RestartRecovery) -> None:
    for _ in range(100):  # bounded: the restore task needs a few loop turns
        if not recovery._tasks:
            return
        await asyncio.sleep(0)


def test_refresh_echoing_the_vwire_mtu_is_no_change() -> None:
    first = LocalVWireSpec("c", Attachment(CLIENT), Attachment(ENDPOINT), None)
    echoed = LocalVWireSpec("c", Attachment(CLIENT), Attachment(ENDPOINT), 1500)
    assert _unchanged(first, echoed, 1500)
    assert not _unchanged(first, LocalVWireSpec("c", Attachment(CLIENT), Attachment(ENDPOINT),
                                                1400), 1500)
    assert not _unchanged(first, LocalVWireSpec("c", Attachment(CLIENT, "x"), Attachment(ENDPOINT),
                                                1500), 1500)
    assert not _unchanged(None, first, 1500)


def test_registry_add_get_forget() -> None:
    live = LiveVWires()
    a, b = object(), object()
    live.add("wg1", LiveVWire(a, remote_spec(), lambda: None))  # type: ignore[arg-type]
    live.add("wg2", LiveVWire(b, remote_spec(), lambda: None))  # type: ignore[arg-type]
    assert live.names() == ["wg1", "wg2"] and len(live) == 2
    live.forget(a)  # type: ignore[arg-type]
    assert live.names() == ["wg2"] and live.get("wg1") is None
    live.forget(a)  # type: ignore[arg-type]  # no error when absent
    assert live.pop("wg2") is not None and len(live) == 0


async def test_restarted_event_restores_name_mtu_addresses_up_and_routes(
    kernel: FakeKernel,
) -> None:
    vwire = await program_remote(kernel, FakeWireGuard(kernel), remote_spec())
    wg_name = await wireguard_name(kernel, vwire)
    assert wg_name is not None and wg_name != "nsm0"
    before = kernel.snapshot()[CLIENT]
    live, lost = LiveVWires(), []
    live.add(wg_name, LiveVWire(vwire, remote_spec(), lambda: lost.append(1)))
    recovery = RestartRecovery(kernel, live)
    await simulate_restart(kernel, vwire, wg_name)
    assert kernel.snapshot()[CLIENT] != before
    recovery.on_event(WgProcessEvent(wg_name, "exited", -9))
    recovery.on_event(WgProcessEvent("someone-else", "restarted"))  # not ours: ignored
    recovery.on_event(WgProcessEvent(wg_name, "restarted", -9))
    await settle(recovery)
    assert recovery.restored == 1 and not lost
    link = await kernel.get_link(CLIENT, "nsm0")
    assert link.up and link.mtu == vwire.mtu and link.alias == marker("fwd/conn-r", wg_name)
    assert await kernel.list_addresses(CLIENT, "nsm0") == ["10.0.0.1/32"]
    assert {r.dst for r in await kernel.list_routes(CLIENT)} == {"10.0.0.2/32", "10.5.0.0/16"}
    await recovery.close()


async def test_a_vwire_whose_daemon_keeps_ending_is_given_up_once(kernel: FakeKernel) -> None:
    vwire = await program_remote(kernel, FakeWireGuard(kernel), remote_spec())
    wg_name = await wireguard_name(kernel, vwire)
    assert wg_name is not None
    live, lost = LiveVWires(), []
    live.add(wg_name, LiveVWire(vwire, remote_spec(), lambda: lost.append(1)))
    recovery = RestartRecovery(kernel, live, max_restarts=2, window=60.0)
    for _ in range(2):  # within the bound: restored each time
        await simulate_restart(kernel, vwire, wg_name)
        recovery.on_event(WgProcessEvent(wg_name, "restarted", 0))
        await settle(recovery)
    assert (recovery.restored, recovery.lost, lost) == (2, 0, [])
    await simulate_restart(kernel, vwire, wg_name)
    recovery.on_event(WgProcessEvent(wg_name, "restarted", 0))  # a third within the window
    recovery.on_event(WgProcessEvent(wg_name, "restarted", 0))  # no longer ours: ignored
    await settle(recovery)
    assert (recovery.restored, recovery.lost, lost, live.names()) == (2, 1, [1], [])
    await recovery.close()


async def test_restore_of_a_closed_vwire_is_dropped_quietly(kernel: FakeKernel) -> None:
    vwire = await program_remote(kernel, FakeWireGuard(kernel), remote_spec())
    wg_name = await wireguard_name(kernel, vwire)
    assert wg_name is not None
    live = LiveVWires()
    live.add(wg_name, LiveVWire(vwire, remote_spec(), lambda: None))
    recovery = RestartRecovery(kernel, live)
    await vwire.close()  # the link is gone: the restore fails with NotFound, logged only
    recovery.on_event(WgProcessEvent(wg_name, "restarted"))
    await settle(recovery)
    assert recovery.restored == 0
    await recovery.close()


async def test_local_refresh_keeps_the_vwire_and_close_removes_it(kernel: FakeKernel) -> None:
    metadata, far = Metadata(), FarSide(KernelMechanism(ENDPOINT, "nse0").to_proto())
    xconnect = Xconnect(kernel, FakeWireGuard(kernel), Node("fwd", "192.0.2.1", "eth0", NODE),
                        PortPool(range(51820, 51830)), LiveVWires())
    chain = NetworkServiceChain([metadata, xconnect, far])
    before = kernel.snapshot()
    request = NetworkServiceRequest(
        connection=Connection(id="c1"),
        mechanism_preferences=[KernelMechanism(CLIENT, "nsm0").to_proto()],
    )
    conn = await chain.run_request(request)
    assert is_kernel(conn.mechanism) and conn.context.MTU == 1500
    md = metadata.get("c1")
    assert md is not None
    vwire = md[VWIRE]
    refresh = NetworkServiceRequest(  # Xconnect rewrote the first request's preferences
        connection=conn, mechanism_preferences=[KernelMechanism(CLIENT, "nsm0").to_proto()]
    )
    await chain.run_request(refresh)
    assert md[VWIRE] is vwire
    kept = md.pop(VWIRE)
    assert kept is not None
    md[LOST] = kept  # as a restart_failed would leave it: the close removes it too
    await chain.run_close(conn)
    assert kernel.snapshot() == before and far.closes == 1
