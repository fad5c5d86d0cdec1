"""Remote (WireGuard) vWire programming on the fake kernel with a fake WireGuard backend."""

from __future__ import annotations

import os

import pytest

from forwarder.kernel import FakeKernel, LinkStats, Route
from forwarder.vwire import (
    Attachment,
    RemoteVWireSpec,
    RouteSpec,
    WireGuardPeerSpec,
    adopt,
    find_leftovers,
    program_remote,
    sweep,
)
from forwarder.vwire.naming import marker
from forwarder.vwire.remote import RemotePreparation, prepare_remote
from forwarder.wireguard import generate_keypair
from forwarder.wireguard.fake import FakeWireGuard
from sdk.errors import DataplaneError, FailedPrecondition, InvalidArgument, NotFound

NODE, WORKLOAD = "/var/run/netns/node", "/var/run/netns/workload"
PRIVATE, _ = generate_keypair()
_, PEER_PUBLIC = generate_keypair()


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    k.add_netns(NODE)
    k.add_netns(WORKLOAD)
    k.add_link(NODE, "eth0", "veth", up=True, mtu=1500)
    return k


@pytest.fixture
def backend(kernel: FakeKernel) -> FakeWireGuard:
    return FakeWireGuard(kernel)


def spec(**changes: object) -> RemoteVWireSpec:
    base: dict[str, object] = {
        "connection_id": "conn-r",
        "workload": Attachment(
            WORKLOAD, "nsm0", ("10.0.0.1/32", "fd00::1/128"), (RouteSpec("10.5.0.0/16"),)
        ),
        "peer": WireGuardPeerSpec(
            PEER_PUBLIC, ("192.0.2.2", 51820), ("10.0.0.2/32", "fd00::2/128"), keepalive=25
        ),
        "private_key": PRIVATE,
        "underlay_ifname": "eth0",
        "underlay_netns": NODE,
    }
    base.update(changes)
    return RemoteVWireSpec(**base)  # type: ignore[arg-type]


async def test_programs_wireguard_into_the_workload(
    kernel: FakeKernel, backend: FakeWireGuard
) -> None:
    vwire = await program_remote(kernel, backend, spec())
    assert vwire.mtu == 1440 and vwire.listen_port == 51999
    link = await kernel.get_link(WORKLOAD, "nsm0")
    assert (link.kind, link.up, link.mtu) == ("tun", True, 1440)
    assert link.alias is not None and link.alias.startswith(f"vwire:conn-r by={os.getpid()} wg=vw")
    assert await kernel.list_addresses(WORKLOAD, "nsm0") == ["10.0.0.1/32", "fd00::1/128"]
    assert set(await kernel.list_routes(WORKLOAD)) == {
        Route("10.0.0.2/32", "nsm0"),
        Route("fd00::2/128", "nsm0"),
        Route("10.5.0.0/16", "nsm0"),
    }
    (peers,) = backend.peers.values()
    peer = peers[PEER_PUBLIC]
    assert peer.allowed_ips == ("10.0.0.2/32", "fd00::2/128", "10.5.0.0/16")
    assert (peer.endpoint, peer.keepalive) == (("192.0.2.2", 51820), 25)
    assert [x.name for x in await kernel.list_links(NODE)] == ["lo", "eth0"]


async def test_a_preparation_under_another_name_gets_routes_naming_it(
    kernel: FakeKernel, backend: FakeWireGuard
) -> None:
    """Prepared before the workload's namespace was known, the interface has a name of the
    underlay's; with no name asked for it keeps that name, and its routes name it too."""
    unnamed = spec(workload=Attachment(WORKLOAD, "", ("10.0.0.1/32",), (RouteSpec("10.5.0.0/16"),)),
                   peer=WireGuardPeerSpec(PEER_PUBLIC, ("192.0.2.2", 51820), ("10.0.0.2/32",)))
    prepared = await prepare_remote(kernel, backend, RemotePreparation(
        "conn-r", PRIVATE, "eth0", 1440, NODE))
    vwire = await program_remote(kernel, backend, unnamed, prepared)
    (name,) = [link.name for link in await kernel.list_links(WORKLOAD) if link.name != "lo"]
    assert vwire.ends[0].ifname == name == prepared.wg_name
    assert set(await kernel.list_routes(WORKLOAD)) == {
        Route("10.0.0.2/32", name), Route("10.5.0.0/16", name)}
    await vwire.close()


@pytest.mark.parametrize(
    ("endpoint", "underlay_mtu", "requested", "expected"),
    [
        (("192.0.2.2", 51820), 1500, None, 1440),
        (("2001:db8::2", 51820), 1500, None, 1420),
        (None, 1500, None, 1420),
        (("192.0.2.2", 51820), 9000, 1400, 1400),
    ],
)
async def test_mtu_is_underlay_minus_overhead(
    kernel: FakeKernel,
    backend: FakeWireGuard,
    endpoint: tuple[str, int] | None,
    underlay_mtu: int,
    requested: int | None,
    expected: int,
) -> None:
    await kernel.set_link(NODE, "eth0", mtu=underlay_mtu)
    peer = WireGuardPeerSpec(PEER_PUBLIC, endpoint, ("10.0.0.2/32",))
    vwire = await program_remote(kernel, backend, spec(peer=peer, mtu=requested))
    assert vwire.mtu == expected
    assert (await kernel.get_link(WORKLOAD, "nsm0")).mtu == expected


async def test_underlay_too_small_for_ipv6_is_refused(
    kernel: FakeKernel, backend: FakeWireGuard
) -> None:
    await kernel.set_link(NODE, "eth0", mtu=1330)
    with pytest.raises(FailedPrecondition, match="underlay MTU"):
        await program_remote(kernel, backend, spec())
    assert backend.where == {}


async def test_close_removes_everything(kernel: FakeKernel, backend: FakeWireGuard) -> None:
    before = kernel.snapshot()
    vwire = await program_remote(kernel, backend, spec())
    await vwire.close()
    await vwire.close()
    assert kernel.snapshot() == before
    assert backend.where == {}


@pytest.mark.parametrize("step", ["create", "set_peer", "move"])
async def test_backend_failure_leaves_nothing(
    kernel: FakeKernel, backend: FakeWireGuard, step: str
) -> None:
    before = kernel.snapshot()
    backend.fail = step
    with pytest.raises(DataplaneError, match="injected"):
        await program_remote(kernel, backend, spec())
    assert kernel.snapshot() == before
    assert backend.where == {}


@pytest.mark.parametrize(("method", "nth"), [("set_link", 1), ("add_address", 2), ("add_route", 3)])
async def test_kernel_failure_leaves_nothing(
    kernel: FakeKernel, backend: FakeWireGuard, method: str, nth: int
) -> None:
    before = kernel.snapshot()
    kernel.fail_on(method, nth=nth)
    with pytest.raises(DataplaneError, match="injected"):
        await program_remote(kernel, backend, spec())
    assert kernel.snapshot() == before
    assert backend.where == {}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"private_key": "short"}, "private_key"),
        ({"peer": WireGuardPeerSpec("bad", None, ())}, "peer.public_key"),
        ({"peer": WireGuardPeerSpec(PEER_PUBLIC, ("nohost", 1), ())}, "peer.endpoint"),
        ({"peer": WireGuardPeerSpec(PEER_PUBLIC, None, ("10.0.0.2",))}, "peer.addresses[0]"),
        ({"underlay_ifname": "bad/name"}, "underlay_ifname"),
        ({"listen_port": 70000}, "listen_port"),
        ({"workload": Attachment(WORKLOAD, "with space")}, "workload.ifname"),
    ],
)
async def test_invalid_input_creates_nothing(
    kernel: FakeKernel, backend: FakeWireGuard, changes: dict[str, object], field: str
) -> None:
    before = kernel.snapshot()
    with pytest.raises(InvalidArgument) as caught:
        await program_remote(kernel, backend, spec(**changes))
    assert caught.value.field == field
    assert kernel.snapshot() == before and backend.where == {}


async def test_missing_underlay_interface_is_not_found(
    kernel: FakeKernel, backend: FakeWireGuard
) -> None:
    with pytest.raises(NotFound, match="underlay_ifname"):
        await program_remote(kernel, backend, spec(underlay_ifname="eth9"))


async def test_metrics_include_handshake_age(kernel: FakeKernel, backend: FakeWireGuard) -> None:
    vwire = await program_remote(kernel, backend, spec())
    metrics = await vwire.metrics()
    assert metrics["wireguard_rx_bytes"] == "5"
    assert 2 <= int(metrics["wireguard_last_handshake_age_seconds"]) <= 60
    assert metrics["workload_rx_bytes"] == "0"
    peer = spec().peer.endpoint
    assert peer is not None and metrics["wireguard_endpoint"] == f"{peer[0]}:{peer[1]}"


async def test_sweep_and_adopt_wireguard_leftovers(
    kernel: FakeKernel, backend: FakeWireGuard
) -> None:
    before = kernel.snapshot()
    await program_remote(kernel, backend, spec())
    leftovers = await find_leftovers(kernel)
    (item,) = leftovers
    assert (item.netns, item.ifname, item.connection_id) == (WORKLOAD, "nsm0", "conn-r")
    assert item.wg_name is not None and item.wg_name in backend.where
    with pytest.raises(FailedPrecondition, match="backend"):
        await sweep(kernel)
    adopted = adopt(kernel, leftovers, "conn-r", backend)
    assert adopted.mtu == 1440
    await adopted.close()
    assert kernel.snapshot() == before and backend.where == {}
    await program_remote(kernel, backend, spec())
    assert [x.connection_id for x in await sweep(kernel, backend)] == ["conn-r"]
    assert kernel.snapshot() == before and backend.where == {}


async def test_a_swept_device_is_deleted_then_its_links_then_it_is_reaped(
    kernel: FakeKernel, backend: FakeWireGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A previous run's daemon outlives ``delete`` (its backend is gone) and ends only with its
    TUN: the backend reaps it once every link of the device, each swept, is deleted."""
    await program_remote(kernel, backend, spec())
    (item,) = await find_leftovers(kernel)
    assert item.wg_name is not None
    kernel.add_link(NODE, "shadow0", "tun")  # its shadow, marked alike
    await kernel.set_link(NODE, "shadow0", alias=marker("conn-r", item.wg_name))
    steps: list[str] = []

    def record(target: object, name: str) -> None:
        original = getattr(target, name)

        async def call(*args: object) -> object:
            steps.append(f"{name} {args[-1]}")
            return await original(*args)
        monkeypatch.setattr(target, name, call)

    record(kernel, "delete_link")
    record(backend, "delete")
    record(backend, "reap")
    swept = await sweep(kernel, backend)
    assert sorted(x.ifname for x in swept) == ["nsm0", "shadow0"]
    assert steps[0] == f"delete {item.wg_name}" and steps[-1] == f"reap {[item.wg_name]}"
    assert set(steps[1:-1]) == {"delete_link nsm0", "delete_link shadow0"}  # the fake's too
    assert backend.reaped == [item.wg_name]


async def test_sweep_leaves_markers_it_cannot_have_written_and_what_live_owners_made(
    kernel: FakeKernel, backend: FakeWireGuard
) -> None:
    await program_remote(kernel, backend, spec())
    kernel.add_link(WORKLOAD, "bogus", "veth")
    await kernel.set_link(WORKLOAD, "bogus", alias="vwire:conn-x wg=not a name!")
    (item,) = [x for x in await find_leftovers(kernel) if x.ifname == "nsm0"]
    assert await sweep(kernel, backend, spare=lambda leftover: leftover is not None) == []
    assert [x.connection_id for x in await sweep(kernel, backend)] == ["conn-r"]  # bogus stays
    assert [x.ifname for x in await find_leftovers(kernel)] == ["bogus"]
    assert item.owner == os.getpid()


def ready_in_workload(ready: bool = True) -> RemotePreparation:
    """The endpoint side's preparation: in the workload's namespace, kept at close if asked."""
    return RemotePreparation("conn-r", PRIVATE, "eth0", 1440, NODE, 0, WORKLOAD,
                             ready_in_workload=ready)


async def test_a_side_prepared_ready_in_its_workload_is_retired_once_programmed(
    kernel: FakeKernel, backend: FakeWireGuard
) -> None:
    """Closed, the endpoint side's interface goes to ``backend.retire`` with where it is and
    what it is called now; the client side's, and one whose programming failed, are deleted."""
    before = kernel.snapshot()
    prepared = await prepare_remote(kernel, backend, ready_in_workload())
    vwire = await program_remote(kernel, backend, spec(), prepared)
    await vwire.close()
    await vwire.close()
    assert backend.retired == [(prepared.wg_name, WORKLOAD, "nsm0")]
    assert kernel.snapshot() == before and backend.where == {}

    backend.retired.clear()
    vwire = await program_remote(kernel, backend, spec(), await prepare_remote(
        kernel, backend, ready_in_workload(False)))
    await vwire.close()
    assert backend.retired == [] and kernel.snapshot() == before

    kernel.fail_on("add_route", nth=1)
    with pytest.raises(DataplaneError, match="injected"):
        await program_remote(kernel, backend, spec(), await prepare_remote(
            kernel, backend, ready_in_workload()))
    assert backend.retired == [] and kernel.snapshot() == before


async def test_counters_of_a_kept_interface_count_from_when_this_vwire_got_it(
    kernel: FakeKernel, backend: FakeWireGuard
) -> None:
    prepared = await prepare_remote(kernel, backend, ready_in_workload())
    backend.baselines[prepared.wg_name] = LinkStats(1000, 2000, 10, 20)  # its last vWire's
    vwire = await program_remote(kernel, backend, spec(), prepared)
    kernel.count_traffic(WORKLOAD, "nsm0", LinkStats(1500, 2600, 14, 29))
    metrics = await vwire.metrics()
    assert [metrics[f"workload_{kind}"] for kind in
            ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")] == ["500", "600", "4", "9"]
    # Its daemon restarted: a new TUN counts from 0, and so does the vWire from then on.
    kernel.count_traffic(WORKLOAD, "nsm0", LinkStats(70, 80, 1, 2))
    metrics = await vwire.metrics()
    assert [metrics[f"workload_{kind}"] for kind in
            ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")] == ["70", "80", "1", "2"]
    kernel.count_traffic(WORKLOAD, "nsm0", LinkStats(1100, 2100, 11, 21))
    assert (await vwire.metrics())["workload_rx_bytes"] == "1100"


async def test_close_does_not_look_for_a_userspace_interface_its_daemon_took_along(
    kernel: FakeKernel, backend: FakeWireGuard
) -> None:
    """Only a kernel WireGuard link outlives its backend's delete: after a userspace one's (the
    fake's, which deletes its link as a stopped daemon does) the close asks the kernel for
    nothing more in the workload's namespace."""
    vwire = await program_remote(kernel, backend, spec())
    kernel.calls.clear()
    await vwire.close()
    assert [call for call in kernel.calls if call.startswith("delete_link")] == [
        f"delete_link('{WORKLOAD}', 'nsm0')"]
