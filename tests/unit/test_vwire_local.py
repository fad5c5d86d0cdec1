"""Local vWire programming on the fake kernel: what is created, validation, rollback, close."""

from __future__ import annotations

import pytest

from forwarder.kernel import FakeKernel, LinkStats, Route
from forwarder.vwire import (
    Attachment,
    LocalVWireSpec,
    NeighbourSpec,
    RouteSpec,
    find_leftovers,
    program_local,
    sweep,
)
from forwarder.vwire.naming import marker
from sdk.errors import AlreadyExists, DataplaneError, InvalidArgument, NotFound

C, E = "/var/run/netns/client", "/var/run/netns/endpoint"


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    k.add_netns(C)
    k.add_netns(E)
    return k


def spec(**changes: object) -> LocalVWireSpec:
    base: dict[str, object] = {
        "connection_id": "conn-1",
        "client": Attachment(
            C,
            "nsm0",
            ("10.0.0.1/32", "fd00::1/128"),
            (
                RouteSpec("10.5.0.0/16"),
                RouteSpec("fd05::/64"),
                RouteSpec("10.7.0.0/16", "10.0.0.2"),
            ),
        ),
        "endpoint": Attachment(
            f"file://{E}",
            None,
            ("10.0.0.2/32", "fd00::2/128"),
            (RouteSpec("10.6.0.0/16"),),
            (NeighbourSpec("10.0.0.1", "02:00:00:00:00:01"),),
        ),
    }
    base.update(changes)
    return LocalVWireSpec(**base)  # type: ignore[arg-type]


async def test_programs_both_ends(kernel: FakeKernel) -> None:
    vwire = await program_local(kernel, spec())
    assert vwire.mtu == 1500
    client, endpoint = vwire.ends
    assert (client.netns, client.ifname) == (C, "nsm0")
    assert endpoint.netns == E and endpoint.ifname.startswith("vw") and len(endpoint.ifname) <= 15
    link = await kernel.get_link(C, "nsm0")
    assert (link.up, link.mtu, link.alias) == (True, 1500, marker("conn-1"))
    assert await kernel.list_addresses(C, "nsm0") == ["10.0.0.1/32", "fd00::1/128"]
    assert set(await kernel.list_routes(C)) == {
        Route("10.0.0.2/32", "nsm0"),
        Route("fd00::2/128", "nsm0"),
        Route("10.5.0.0/16", "nsm0", gateway="10.0.0.2"),
        Route("fd05::/64", "nsm0", gateway="fd00::2"),
        Route("10.7.0.0/16", "nsm0", gateway="10.0.0.2"),
    }
    assert Route("10.6.0.0/16", endpoint.ifname, gateway="10.0.0.1") in await kernel.list_routes(E)
    assert kernel.snapshot()[E]["neighbours"]


async def test_context_mtu_is_applied_and_reported(kernel: FakeKernel) -> None:
    vwire = await program_local(kernel, spec(mtu=1400))
    assert vwire.mtu == 1400
    assert {(await kernel.get_link(e.netns, e.ifname)).mtu for e in vwire.ends} == {1400}


async def test_close_removes_everything_and_is_idempotent(kernel: FakeKernel) -> None:
    before = kernel.snapshot()
    vwire = await program_local(kernel, spec())
    await vwire.close()
    assert kernel.snapshot() == before
    await vwire.close()
    assert vwire.closed


@pytest.mark.parametrize(
    ("method", "nth"),
    [("create_veth", 1), ("set_link", 2), ("add_address", 2), ("add_route", 4), ("add_route", 7)],
)
async def test_failure_mid_programming_leaves_nothing(
    kernel: FakeKernel, method: str, nth: int
) -> None:
    before = kernel.snapshot()
    kernel.fail_on(method, nth=nth)
    with pytest.raises(DataplaneError, match="injected"):
        await program_local(kernel, spec())
    assert kernel.snapshot() == before


async def test_name_conflict_is_already_exists_and_leaves_nothing(kernel: FakeKernel) -> None:
    first = await program_local(kernel, spec())
    before = kernel.snapshot()
    with pytest.raises(AlreadyExists):
        await program_local(kernel, spec(connection_id="conn-2"))
    assert kernel.snapshot() == before
    await first.close()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"connection_id": "has space"}, "connection_id"),
        ({"client": Attachment(C, "way-too-long-name0")}, "client.ifname"),
        ({"client": Attachment(C, "a/b")}, "client.ifname"),
        ({"client": Attachment(C, "nsm:0")}, "client.ifname"),
        ({"client": Attachment(C, "nsm0", ("10.0.0.1",))}, "client.addresses[0]"),
        (
            {"client": Attachment(C, "nsm0", ("10.0.0.1/32",), (RouteSpec("10.5.0.1/16"),))},
            "client.routes[0].prefix",
        ),
        (
            {"client": Attachment(C, "nsm0", ("10.0.0.1/32",), (RouteSpec("10.5.0.0/16", "x"),))},
            "client.routes[0].next_hop",
        ),
        (
            {
                "client": Attachment(C, "nsm0", ("10.0.0.1/32",), (RouteSpec("fd05::/64"),)),
                "endpoint": Attachment(E, None, ("10.0.0.2/32",)),
            },
            "client.routes[0].next_hop",
        ),
        (
            {
                "endpoint": Attachment(
                    E, None, ("10.0.0.2/32", "fd00::2/128"), (), (NeighbourSpec("10.0.0.1", "zz"),)
                )
            },
            "endpoint.neighbours[0].lladdr",
        ),
        ({"mtu": 1000}, "mtu"),
        ({"client": Attachment("not-a-path")}, "client.netns"),
    ],
)
async def test_invalid_input_names_the_field_and_creates_nothing(
    kernel: FakeKernel, changes: dict[str, object], field: str
) -> None:
    before = kernel.snapshot()
    with pytest.raises(InvalidArgument) as caught:
        await program_local(kernel, spec(**changes))
    assert caught.value.field == field
    assert kernel.snapshot() == before


async def test_missing_namespace_is_not_found(kernel: FakeKernel) -> None:
    with pytest.raises(NotFound, match=r"endpoint\.netns"):
        await program_local(kernel, spec(endpoint=Attachment("/var/run/netns/gone")))
    assert kernel.calls == []


async def test_overlapping_connections_live_side_by_side(kernel: FakeKernel) -> None:
    kernel.add_netns("/var/run/netns/client2")
    kernel.add_netns("/var/run/netns/endpoint2")
    one = await program_local(kernel, spec())
    two = await program_local(
        kernel,
        spec(
            connection_id="conn-2",
            client=Attachment("/var/run/netns/client2", "nsm0", ("10.0.0.1/32",)),
            endpoint=Attachment("/var/run/netns/endpoint2", "nsm0", ("10.0.0.2/32",)),
        ),
    )
    assert {e.netns for e in one.ends}.isdisjoint({e.netns for e in two.ends})
    await one.close()
    assert await kernel.list_addresses("/var/run/netns/client2", "nsm0") == ["10.0.0.1/32"]
    await two.close()


async def test_metrics_report_both_ends(kernel: FakeKernel) -> None:
    vwire = await program_local(kernel, spec())
    kernel.count_traffic(C, "nsm0", LinkStats(rx_bytes=10, tx_bytes=20, rx_packets=1, tx_packets=2))
    metrics = await vwire.metrics()
    assert metrics["client_rx_bytes"] == "10"
    assert metrics["client_tx_packets"] == "2"
    assert metrics["endpoint_rx_bytes"] == "0"
    assert metrics["mtu"] == "1500"
    assert all(isinstance(v, str) for v in metrics.values())


async def test_sweep_removes_leftovers_except_kept(kernel: FakeKernel) -> None:
    before = kernel.snapshot()
    await program_local(kernel, spec())  # "crashed": handle lost
    kept = await program_local(
        kernel,
        spec(connection_id="keep-me", client=Attachment(C, "nsm1"), endpoint=Attachment(E, "k1")),
    )
    leftovers = await find_leftovers(kernel)
    assert {x.connection_id for x in leftovers} == {"conn-1", "keep-me"}
    removed = await sweep(kernel, keep={"keep-me"})
    assert {x.connection_id for x in removed} == {"conn-1"}
    await kept.close()
    assert kernel.snapshot() == before
