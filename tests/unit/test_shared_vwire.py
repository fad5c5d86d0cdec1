"""Shared-device vWires on the fake kernel with a fake WireGuard backend: what each side's table
and rules hold, how connections share and leave a device, and that failures leave nothing."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from ipaddress import ip_network

import pytest

from forwarder.kernel import FakeKernel, Neighbour, Route, Rule
from forwarder.ports import PortPool
from forwarder.shared import (
    MAX_SPACES,
    Selectors,
    SharedDevices,
    SharedPeerSpec,
    SharedVWireSpec,
    program_shared,
)
from forwarder.vwire import Attachment, RouteSpec, VWire
from forwarder.vwire.naming import generated_mac
from forwarder.wireguard import WgProcessEvent, generate_keypair
from forwarder.wireguard.fake import FakeWireGuard
from sdk.errors import DataplaneError, FailedPrecondition, InvalidArgument

NODE = "/var/run/netns/node"
_, PEER = generate_keypair()
_, OTHER_PEER = generate_keypair()


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    k.add_netns(NODE)
    k.add_link(NODE, "eth0", "veth", up=True, mtu=1500)
    for name in ("w1", "w2", "w3"):
        k.add_netns(f"/var/run/netns/{name}")
    return k


@pytest.fixture
def backend(kernel: FakeKernel) -> FakeWireGuard:
    return FakeWireGuard(kernel)


@pytest.fixture
async def devices(kernel: FakeKernel, backend: FakeWireGuard) -> AsyncIterator[SharedDevices]:
    shared = SharedDevices(kernel, backend, PortPool(range(51820, 51830)), "fwd-unit", NODE,
                           linger=0)
    await shared.start()
    yield shared
    await shared.stop()


def spec(workload: str = "w1", own: str = "10.60.0.2/32", far: str = "10.60.0.1/32",
         peer_key: str = PEER, **changes: object) -> SharedVWireSpec:
    base: dict[str, object] = {
        "connection_id": f"fwd-unit/{workload}-{own}-{far}",
        "workload": Attachment(f"/var/run/netns/{workload}", "nsm0", (own,)),
        "peer": SharedPeerSpec(peer_key, ("192.0.2.2", 51820), (far,), keepalive=25),
        "underlay_ifname": "eth0",
        "underlay_netns": NODE,
    }
    base.update(changes)
    return SharedVWireSpec(**base)  # type: ignore[arg-type]


async def test_a_connection_gets_a_veth_a_table_and_rules(
    kernel: FakeKernel, backend: FakeWireGuard, devices: SharedDevices
) -> None:
    s = replace(
        spec(),
        workload=Attachment("/var/run/netns/w1", "nsm0", ("10.60.0.2/32", "fd00::2/128"),
                            (RouteSpec("10.9.0.0/16"),)),
        peer=SharedPeerSpec(PEER, ("192.0.2.2", 51820), ("10.60.0.1/32", "fd00::1/128"),
                            ("10.8.0.0/16",), keepalive=25),
    )
    vwire = await program_shared(kernel, devices, s)
    assert (vwire.space, vwire.mtu, vwire.listen_port) == (0, 1440, 51820)
    (device,) = devices.devices()
    ns = devices.netns
    assert ns.startswith(f"/proc/{os.getpid()}/fd/")
    assert kernel.sysctls[ns]["net.ipv4.ip_forward"] == "1"
    # the device: in the shared namespace, up, one peer with the far prefixes
    wg = await kernel.get_link(ns, device.wg_name)
    assert (wg.kind, wg.up, wg.mtu) == ("tun", True, 1440)
    peer = backend.peers[device.wg_name][PEER]
    assert set(peer.allowed_ips) == {"10.60.0.1/32", "fd00::1/128", "10.9.0.0/16"}
    assert (peer.endpoint, peer.keepalive) == (("192.0.2.2", 51820), 25)
    # the workload: a veth with its address, far prefixes via the link-local next hop
    w1 = "/var/run/netns/w1"
    nsm0 = await kernel.get_link(w1, "nsm0")
    node_end = next(x for x in await kernel.list_links(ns) if x.kind == "veth")
    assert node_end.name.startswith("vs") and len(node_end.name) == 13
    assert (nsm0.kind, nsm0.up, nsm0.mtu, node_end.mtu) == ("veth", True, 1440, 1440)
    assert set(await kernel.list_routes(w1)) == {
        Route("10.60.0.1/32", "nsm0", "169.254.0.1", onlink=True),
        Route("fd00::1/128", "nsm0", "fe80::1", onlink=True),
        Route("10.9.0.0/16", "nsm0", "169.254.0.1", onlink=True),
    }
    neighbours = kernel.snapshot()[w1]["neighbours"]
    assert isinstance(neighbours, list)
    assert {repr(Neighbour("nsm0", "169.254.0.1", node_end.mac or "")),
            repr(Neighbour("nsm0", "fe80::1", node_end.mac or ""))} <= set(neighbours)
    # the shared namespace: the connection's table and rules, nothing else
    table = devices.table(vwire.connection_id)
    assert set(await kernel.list_routes(ns, table)) == {
        Route("10.60.0.1/32", device.wg_name, table=table),
        Route("fd00::1/128", device.wg_name, table=table),
        Route("10.9.0.0/16", device.wg_name, table=table),
        Route("10.60.0.2/32", node_end.name, table=table),
        Route("fd00::2/128", node_end.name, table=table),
        Route("10.8.0.0/16", node_end.name, "10.60.0.2", table=table, onlink=True),
    }
    v4, v6 = socket.AF_INET, socket.AF_INET6
    assert set(await kernel.list_rules(ns)) == {
        Rule(100, table, v4, src="10.60.0.2/32", iif=node_end.name),
        Rule(100, table, v6, src="fd00::2/128", iif=node_end.name),
        Rule(100, table, v4, src="10.8.0.0/16", iif=node_end.name),
        Rule(100, table, v4, src="10.60.0.1/32", dst="10.60.0.2/32", iif=device.wg_name),
        Rule(100, table, v4, src="10.60.0.1/32", dst="10.8.0.0/16", iif=device.wg_name),
        Rule(100, table, v4, src="10.9.0.0/16", dst="10.60.0.2/32", iif=device.wg_name),
        Rule(100, table, v4, src="10.9.0.0/16", dst="10.8.0.0/16", iif=device.wg_name),
        Rule(100, table, v6, src="fd00::1/128", dst="fd00::2/128", iif=device.wg_name),
    }
    assert await kernel.list_routes(ns) == []  # the main table stays empty: nothing else routes
    metrics = await vwire.metrics()
    assert (metrics["wireguard_device"], metrics["wireguard_space"]) == ("shared", "0")


async def test_connections_to_one_node_share_its_device_and_leave_it(
    kernel: FakeKernel, backend: FakeWireGuard, devices: SharedDevices
) -> None:
    empty = kernel.snapshot()
    first = await program_shared(kernel, devices, spec("w1", "10.60.0.2/32"))
    second = await program_shared(kernel, devices, spec("w2", "10.60.0.3/32"))
    (device,) = devices.devices()
    assert (first.space, second.space) == (0, 0)
    assert set(backend.peers[device.wg_name][PEER].allowed_ips) == {"10.60.0.1/32"}
    assert backend.calls.count(("set_peer", device.wg_name)) == 1  # the second only added
    other = await program_shared(kernel, devices,
                                 spec("w3", far="10.61.0.1/32", peer_key=OTHER_PEER))
    assert len(devices.devices()) == 2  # another node: another device
    await second.close()
    assert devices.devices()[0].running and len(devices.devices()) == 2
    await first.close()
    assert device.wg_name not in backend.peers  # the last one out stopped it
    await other.close()
    assert devices.devices() == [] and devices.ports._by_owner == {}
    assert kernel.snapshot() == empty


async def test_identical_addresses_go_over_a_second_device_pair(
    kernel: FakeKernel, backend: FakeWireGuard, devices: SharedDevices
) -> None:
    first = await program_shared(kernel, devices, spec("w1"))
    twin = await program_shared(kernel, devices, spec("w2"))
    assert (first.space, twin.space) == (0, 1)
    assert len({d.wg_name for d in devices.devices()}) == 2
    assert len({d.port for d in devices.devices()}) == 2
    # the far side's choice is kept, and refused where it would clash here
    with pytest.raises(FailedPrecondition, match="address space 0"):
        await program_shared(kernel, devices, spec("w3", space=0))
    third = await program_shared(kernel, devices, spec("w3", space=2))
    assert third.space == 2


@pytest.mark.parametrize("step", ["create", "set_peer", "add_allowed_ips", "add_rule",
                                  "add_neighbour"])
async def test_a_failure_leaves_nothing(
    kernel: FakeKernel, backend: FakeWireGuard, devices: SharedDevices, step: str
) -> None:
    kept = await program_shared(kernel, devices, spec("w1", "10.60.0.2/32"))
    before = kernel.snapshot()
    allowed = backend.peers[devices.devices()[0].wg_name][PEER].allowed_ips
    if step in ("create", "set_peer", "add_allowed_ips"):
        backend.fail = step
    else:
        kernel.fail_on(step)
    key = OTHER_PEER if step in ("create", "set_peer") else PEER  # a new device, or joining
    with pytest.raises(DataplaneError):
        await program_shared(kernel, devices, spec("w2", "10.60.0.3/32", peer_key=key))
    backend.fail = None
    assert kernel.snapshot() == before
    assert backend.peers[devices.devices()[0].wg_name][PEER].allowed_ips == allowed
    assert len(devices.devices()) == 1 and len(devices.ports._by_owner) == 1
    await kept.close()


async def test_bad_input_is_refused_before_anything_is_made(
    kernel: FakeKernel, devices: SharedDevices
) -> None:
    before = kernel.snapshot()
    with pytest.raises(InvalidArgument, match=r"peer\.routes\[0\]"):
        await program_shared(kernel, devices, spec(peer=SharedPeerSpec(
            PEER, None, ("10.60.0.1/32",), ("not-a-prefix",))))
    with pytest.raises(InvalidArgument, match=r"workload\.addresses\[0\]"):
        await program_shared(kernel, devices, spec(own="10.60.0.300/32"))
    assert kernel.snapshot() == before and devices.devices() == []


async def test_a_restarted_daemon_gets_its_routes_back_and_a_lost_one_is_reported(
    kernel: FakeKernel, backend: FakeWireGuard, devices: SharedDevices
) -> None:
    events: list[object] = []

    def subscribe(callback: object) -> object:
        events.append(callback)
        return lambda: None

    devices.watch(subscribe)  # type: ignore[arg-type]
    lost: list[VWire] = []
    vwire = await program_shared(kernel, devices, spec(), lost.append)
    (device,) = devices.devices()
    table = devices.table(vwire.connection_id)
    wanted = set(await kernel.list_routes(devices.netns, table))
    # a restart brings a fresh TUN back: down, default MTU, no routes through it
    await kernel.delete_link(devices.netns, device.wg_name)
    kernel.add_link(devices.netns, device.wg_name, "tun")
    (callback,) = events
    callback(WgProcessEvent(device.wg_name, "restarted", 1))  # type: ignore[operator]
    await next(iter(devices._tasks))
    link = await kernel.get_link(devices.netns, device.wg_name)
    assert (link.up, link.mtu) == (True, 1440)
    assert set(await kernel.list_routes(devices.netns, table)) == wanted
    callback(WgProcessEvent(device.wg_name, "restart_failed", 1, "gave up"))  # type: ignore[operator]
    assert lost == [vwire]
    await vwire.close()


async def test_a_device_lingers_after_its_last_connection(
    kernel: FakeKernel, backend: FakeWireGuard
) -> None:
    devices = SharedDevices(kernel, backend, PortPool(range(51820, 51830)), "fwd-unit", NODE,
                            linger=0.2)
    await devices.start()
    try:
        first = await program_shared(kernel, devices, spec("w1"))
        (device,) = devices.devices()
        await first.close()
        assert device.running and backend.peers[device.wg_name][PEER].allowed_ips == ()
        port = device.port
        again = await program_shared(kernel, devices, spec("w2", "10.60.0.3/32"))
        assert devices.devices() == [device] and device.running  # taken over, not made again
        assert device.port == port and kernel.calls.count("create_namespace()") == 1
        assert backend.peers[device.wg_name][PEER].allowed_ips == ("10.60.0.1/32",)
        await again.close()
        for _ in range(100):  # the idle stop runs 0.2 s after the last one left
            if not devices.devices():
                break
            await asyncio.sleep(0.05)
        assert devices.devices() == [] and device.wg_name not in backend.peers
        assert devices.ports._by_owner == {}
    finally:
        await devices.stop()


def test_generated_macs_are_local_unicast_and_stable() -> None:
    macs = {generated_mac(f"fwd/c{i}", role) for i in range(200) for role in ("shared", "w")}
    assert len(macs) == 400
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0x02 and not first & 0x01, mac  # locally administered, not multicast
    assert generated_mac("fwd/c1", "w") == generated_mac("fwd/c1", "w")


async def test_address_spaces_are_bounded(devices: SharedDevices) -> None:
    same = Selectors((ip_network("10.70.0.2/32"),), (ip_network("10.70.0.1/32"),))
    spaces = [devices.reserve(PEER, None, f"fwd-unit/c{i}", same) for i in range(MAX_SPACES)]
    assert spaces == list(range(MAX_SPACES))
    with pytest.raises(FailedPrecondition, match="distinct address pools"):
        devices.reserve(PEER, None, "fwd-unit/one-too-many", same)
    for i in range(MAX_SPACES):
        await devices.leave(PEER, i, f"fwd-unit/c{i}")
    assert devices.devices() == []


async def test_the_vwires_of_a_device_share_one_reading_of_its_peer_statistics(
    kernel: FakeKernel, backend: FakeWireGuard
) -> None:
    now = [100.0]
    shared = SharedDevices(kernel, backend, PortPool(range(51820, 51830)), "fwd-unit", NODE,
                           linger=0, clock=lambda: now[0])
    await shared.start()
    try:
        vwires = [await program_shared(kernel, shared, spec(name, f"10.60.0.{i}/32"))
                  for i, name in enumerate(("w1", "w2", "w3"), start=2)]
        (device,) = shared.devices()

        def reads() -> int:
            return backend.calls.count(("stats", device.wg_name))

        before = reads()
        found = await asyncio.gather(*(v.metrics() for v in vwires))  # at once: one reading
        assert reads() == before + 1
        assert {m["wireguard_last_handshake_age_seconds"] for m in found} == {"3"}
        now[0] += 0.5
        await vwires[0].metrics()  # within the second: the same reading
        assert reads() == before + 1
        now[0] += 0.6
        await vwires[1].metrics()  # older than a second: read again
        assert reads() == before + 2
        backend.fail = "stats"
        now[0] += 1.1
        with pytest.raises(DataplaneError, match="injected"):
            await vwires[2].metrics()
        backend.fail = None
        await vwires[2].metrics()  # a failed reading is not kept
        assert reads() == before + 4
        for vwire in vwires:
            await vwire.close()
    finally:
        await shared.stop()
