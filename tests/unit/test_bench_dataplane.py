"""bench.dataplane's planning and its shared-device wiring, on the fake kernel: the aggregate
rows' connections collide with nothing, both sides of a shared vWire are programmed as two
forwarders would (the client dials the endpoint side's device port, in the space it chose) over
one device pair, a failure leaves nothing behind, and the ratios and flags."""

from __future__ import annotations

import pytest

from bench import dataplane
from bench.dataplane import (
    AGGREGATE_PORT_BASE,
    FABRIC_PORTS,
    HAND_PORTS,
    JUMBO_PORTS,
    MAX_AGGREGATE,
    SETUP_PORT_BASE,
    SHARED_ADDRS,
    SHARED_IFNAMES,
    SHARED_KEEPALIVE,
    SHARED_PORTS,
    UNDERLAY,
    Results,
    Topo,
    Wire,
    aggregate_wires,
    metrics_of,
    program_shared_wire,
    roles,
    shared_nodes,
)
from forwarder.kernel import FakeKernel
from forwarder.wireguard.fake import FakeWireGuard
from sdk.errors import DataplaneError

SINGLE = Wire("bench-shared", "c1", "e2", SHARED_ADDRS, SHARED_IFNAMES)


def fixed_wires() -> list[Wire]:
    """The single-stream rows' remote connections (as the benchmark names them)."""
    return [
        Wire("bench-remote", "c1", "e2", dataplane.REMOTE_ADDRS, ("nsm0", "nse0"), FABRIC_PORTS),
        Wire("bench-remote-jumbo", "c1", "e2", dataplane.JUMBO_ADDRS, ("nsm1", "nse1"),
             JUMBO_PORTS),
        SINGLE,
    ]


def test_the_aggregate_connections_collide_with_nothing() -> None:
    per_vwire = aggregate_wires(MAX_AGGREGATE, shared=False)
    shared = aggregate_wires(MAX_AGGREGATE, shared=True)
    wires = fixed_wires() + per_vwire + shared
    assert len({w.cid for w in wires}) == len(wires)
    addresses = [a for w in wires for a in w.addrs] + list(dataplane.LOCAL_ADDRS)
    assert len(set(addresses)) == len(addresses)
    ends = [(w.client, w.ifnames[0]) for w in wires] + [(w.endpoint, w.ifnames[1]) for w in wires]
    assert len(set(ends)) == len(ends)
    assert {w.client for w in per_vwire + shared} | {w.endpoint for w in per_vwire + shared} \
        <= set(roles(MAX_AGGREGATE))
    ports = [p for w in per_vwire for p in w.ports]
    taken = {*FABRIC_PORTS, *JUMBO_PORTS, *HAND_PORTS, *SHARED_PORTS["n1"], *SHARED_PORTS["n2"]}
    assert len(set(ports)) == len(ports) and not taken & set(ports)
    assert min(ports) == AGGREGATE_PORT_BASE and max(ports) < SETUP_PORT_BASE
    assert not set(SHARED_PORTS["n1"]) & set(SHARED_PORTS["n2"])


def test_roles_add_a_client_and_an_endpoint_per_aggregate_connection() -> None:
    assert roles(0) == ["n1", "n2", "c1", "e2", "lc", "le"]
    assert roles(2)[6:] == ["ac0", "ae0", "ac1", "ae1"]


@pytest.fixture
def topo() -> Topo:
    return Topo({role: f"vwd-unit-{role}" for role in roles(2)})


@pytest.fixture
def kernel(topo: Topo) -> FakeKernel:
    k = FakeKernel()
    for role in topo.names:
        k.add_netns(topo.path(role))
    for role, (ifname, _) in UNDERLAY.items():
        k.add_link(topo.path(role), ifname, "veth", up=True, mtu=1500)
    return k


async def test_both_sides_of_shared_vwires_go_over_one_device_pair(
    topo: Topo, kernel: FakeKernel
) -> None:
    backend = FakeWireGuard(kernel)
    before = kernel.snapshot()
    wires = [SINGLE, *aggregate_wires(2, shared=True)]
    async with shared_nodes(topo, kernel, backend) as (n1, n2):
        made = [await program_shared_wire(kernel, (n1, n2), topo, w) for w in wires]
        (client_dev,), (endpoint_dev,) = n1.devices(), n2.devices()
        assert (client_dev.peer_key, endpoint_dev.peer_key) == (n2.public_key, n1.public_key)
        assert backend.where[client_dev.wg_name] == n1.netns
        assert backend.where[endpoint_dev.wg_name] == n2.netns
        assert client_dev.port in SHARED_PORTS["n1"] and endpoint_dev.port in SHARED_PORTS["n2"]
        dial = backend.peers[client_dev.wg_name][n2.public_key]
        listen = backend.peers[endpoint_dev.wg_name][n1.public_key]
        assert (dial.endpoint, dial.keepalive) == ((UNDERLAY["n2"][1], endpoint_dev.port),
                                                   SHARED_KEEPALIVE)
        assert listen.endpoint is None  # learnt from the client side's handshake
        assert sorted(dial.allowed_ips) == sorted(f"{w.addrs[1]}/32" for w in wires)
        assert sorted(listen.allowed_ips) == sorted(f"{w.addrs[0]}/32" for w in wires)
        for (client, endpoint), wire in zip(made, wires, strict=True):
            assert client.space == endpoint.space == 0
            assert endpoint.listen_port == endpoint_dev.port
            assert (client.mtu, endpoint.mtu) == (1440, 1440)  # an IPv4 underlay on both sides
            assert client.ends[0].netns == topo.path(wire.client)
            assert (client.ends[0].ifname, endpoint.ends[0].ifname) == SHARED_IFNAMES
        for vwires in made:
            await dataplane.close_all(vwires)
    assert kernel.snapshot() == before
    assert backend.where == {}


async def test_a_failing_client_side_closes_the_endpoint_side(
    topo: Topo, kernel: FakeKernel
) -> None:
    backend = FakeWireGuard(kernel)
    before = kernel.snapshot()
    async with shared_nodes(topo, kernel, backend) as nodes:
        kernel.fail_on("create_veth", nth=2)  # the endpoint side's works, the client side's not
        with pytest.raises(DataplaneError, match="create_veth"):
            await program_shared_wire(kernel, nodes, topo, SINGLE)
        links = await kernel.list_links(topo.path("e2"))
        assert [link.name for link in links] == ["lo"]
        assert all(not node.devices() or not node.devices()[0].members for node in nodes)
    assert kernel.snapshot() == before
    assert backend.where == {}


def results_with(rows: dict[str, float]) -> Results:
    base = {"veth": 10.0, "wireguard_go": 0.4, "wireguard_go_same_mtu": 0.4,
            "remote_vwire": 0.4, "remote_vwire_jumbo": 1.2, "local_vwire": 10.0}
    return Results(rounds={row: [value] for row, value in {**base, **rows}.items()})


def test_the_shared_ratios_hold_each_shared_row_against_its_device_per_vwire_peer() -> None:
    results = results_with({"remote_vwire_shared": 0.3, "remote_vwire_aggregate": 0.8,
                            "remote_vwire_shared_aggregate": 0.5})
    metrics = {m.name: m.value for m in metrics_of(results)}
    assert metrics["shared_vs_per_vwire"] == 0.75
    assert metrics["shared_vs_per_vwire_aggregate"] == 0.625
    assert metrics["remote_vwire_shared_aggregate_gbps"] == 0.5


def test_without_aggregate_rows_there_is_no_aggregate_ratio() -> None:
    metrics = {m.name for m in metrics_of(results_with({"remote_vwire_shared": 0.3}))}
    assert "shared_vs_per_vwire" in metrics
    assert "shared_vs_per_vwire_aggregate" not in metrics


def test_aggregate_is_a_flag_with_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    parser = dataplane._parser()

    def config(*argv: str) -> dataplane.Config:
        return dataplane.config_of(parser, parser.parse_args(argv))

    assert config().aggregate == 4
    assert config("--aggregate", "0").aggregate == 0
    for bad in ("-1", str(MAX_AGGREGATE + 1)):
        with pytest.raises(SystemExit):
            config("--aggregate", bad)
        assert f"--aggregate {bad}: use 0..{MAX_AGGREGATE}" in capsys.readouterr().err

