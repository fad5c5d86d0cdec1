"""``service@domain`` across two domains in-process: two sandboxes (registry, nodes, endpoints)
joined by the real gateway of each (``tests/interdomain.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from gateway.app import Gateway
from gateway.settings import GatewaySettings
from registry.app import Registry
from registry.store import open_store
from sdk.chain import CallContext
from sdk.errors import (
    FabricError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from sdk.grpcutil import parse_address
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Query, RegistryChain
from sdk.registry.kinds import ENDPOINT, SERVICE
from sdk.security.policy import StaticPolicy, parse_policy
from sdk.testing import Sandbox, request_for
from tests.dns_stub import dns_stub
from tests.interdomain import TwoDomains, two_domains


@pytest.fixture
async def domains() -> AsyncIterator[TwoDomains]:
    async with two_domains() as both:
        yield both


def names(conn: Connection) -> list[str]:
    return [segment.name for segment in conn.path.path_segments]


def refresh_of(conn: Connection) -> NetworkServiceRequest:
    return NetworkServiceRequest(
        connection=conn, mechanism_preferences=request_for("x", "x").mechanism_preferences)


def open_connections(domains: TwoDomains) -> int:
    managers = [n.manager for box in domains.boxes.values() for n in box.nodes]
    count = sum(len(m.monitor.connections) for m in managers if m is not None)
    return count + sum(len(g.gateway.monitor.connections) for g in domains.gateways.values())


async def test_request_refresh_close_cross_gateway_to_gateway(domains: TwoDomains) -> None:
    a, b = domains.boxes["a"], domains.boxes["b"]
    a1, b1 = await a.node(), await b.node()
    await b.endpoint(b1, "nse-b", services=["db"])
    client = a.client(a1, "web")
    conn = await client.chain.run_request(request_for("db@b", "c-1"), CallContext())
    assert names(conn) == [
        "web", "nsmgr-a-n1", "forwarder-a-n1", "gateway-a", "gateway-b", "nsmgr-b-n1",
        "forwarder-b-n1", "nse-b",
    ]
    assert conn.network_service == "db@b" and conn.network_service_endpoint_name == "nse-b@b"
    marks = {s.name: s.metrics.get("domain") for s in conn.path.path_segments}
    assert (marks["gateway-a"], marks["gateway-b"], marks["nse-b"]) == ("a", "b", None)
    assert conn.mechanism.type == "KERNEL"
    assert conn.context.ip_context.dst_ip_addrs[0].startswith("10.80.")

    refreshed = await client.chain.run_request(refresh_of(conn), CallContext())
    assert [s.id for s in refreshed.path.path_segments] == [s.id for s in conn.path.path_segments]
    assert open_connections(domains) == 2 + 2  # each nsmgr is passed once; two gateways

    await client.chain.run_close(refreshed, CallContext())
    assert open_connections(domains) == 0


async def test_a_name_of_the_own_domain_is_local(domains: TwoDomains) -> None:
    a = domains.boxes["a"]
    a1 = await a.node()
    await a.endpoint(a1, "nse-a", services=["db"])
    conn = await a.client(a1, "web").chain.run_request(request_for("db@a", "c-2"), CallContext())
    assert "gateway-a" not in names(conn) and names(conn)[-1] == "nse-a"
    assert conn.network_service == "db@a"
    endpoints = RegistryChain([RemoteRegistry(ENDPOINT, a.pool.get(a.registry_url))])
    found = [e.record.name async for e in endpoints.find(
        Query(NetworkServiceEndpoint(name="nse-a@a")))]
    assert found == ["nse-a"]  # the registry, too, takes its own domain's names as local


async def test_finds_through_the_local_registry_name_the_domain(domains: TwoDomains) -> None:
    a, b = domains.boxes["a"], domains.boxes["b"]
    b1 = await b.node()
    await b.endpoint(b1, "nse-1", services=["db"])
    await b.endpoint(b1, "nse-2", services=["web"])
    await b.services.register(NetworkService(name="db"))
    registry = a.pool.get(a.registry_url)
    endpoints = RegistryChain([RemoteRegistry(ENDPOINT, registry)])
    found = [e.record async for e in endpoints.find(
        Query(NetworkServiceEndpoint(network_service_names=["db@b"])))]
    assert [(r.name, list(r.network_service_names)) for r in found] == [("nse-1@b", ["db@b"])]
    assert found[0].url == domains.gateways["a"].local_url  # requests go to the own gateway
    every = [e.record.name async for e in endpoints.find(
        Query(NetworkServiceEndpoint(name="@b")))]
    assert sorted(every) == ["nse-1@b", "nse-2@b"]
    services = RegistryChain([RemoteRegistry(SERVICE, registry)])
    assert [e.record.name async for e in services.find(
        Query(NetworkService(name="db@b")))] == ["db@b"]


async def test_an_unknown_domain_is_named_with_the_places_looked_in(
    domains: TwoDomains,
) -> None:
    a = domains.boxes["a"]
    a1 = await a.node()
    with pytest.raises(NotFound, match=r"domain 'zz': not in --domains-file .*domains.yaml"):
        await a.client(a1).chain.run_request(request_for("db@zz", "c-3"), CallContext())


async def test_other_domains_may_not_register_here(domains: TwoDomains) -> None:
    a = domains.boxes["a"]
    endpoints = RegistryChain([RemoteRegistry(ENDPOINT, a.pool.get(a.registry_url))])
    with pytest.raises(PermissionDenied, match="may not register"):
        await endpoints.register(NetworkServiceEndpoint(
            name="intruder@b", network_service_names=["db@b"], url="tcp://10.0.0.1:1"))
    with pytest.raises(PermissionDenied, match="may not register"):
        await endpoints.unregister(NetworkServiceEndpoint(name="nse-b@b"))


async def test_without_a_gateway_another_domain_is_refused_with_the_fix() -> None:
    async with Sandbox(domain="a") as a:
        a1 = await a.node()
        with pytest.raises(FailedPrecondition, match="set --gateway"):
            await a.client(a1).chain.run_request(request_for("db@b", "c-4"), CallContext())


@pytest.mark.parametrize("restarted", ["b", "a"], ids=["remote-gateway", "local-gateway"])
async def test_refresh_after_a_gateway_restarted(domains: TwoDomains, restarted: str) -> None:
    a, b = domains.boxes["a"], domains.boxes["b"]
    a1, b1 = await a.node(), await b.node()
    await b.endpoint(b1, "nse-b", services=["db"])
    client = a.client(a1, "web")
    conn = await client.chain.run_request(request_for("db@b", "c-5"), CallContext())
    await domains.stop_gateway(restarted)
    await domains.start_gateway(restarted)  # a new process: it knows no connection
    refreshed = await client.chain.run_request(refresh_of(conn), CallContext())
    assert names(refreshed) == names(conn)
    assert [s.id for s in refreshed.path.path_segments] == [s.id for s in conn.path.path_segments]
    assert refreshed.network_service_endpoint_name == "nse-b@b"
    assert len(domains.gateways[restarted].gateway.monitor.connections) == 1
    await client.chain.run_close(refreshed, CallContext())
    assert open_connections(domains) == 0


async def test_a_kept_connection_heals_onto_the_replacing_remote_endpoint(
    domains: TwoDomains,
) -> None:
    a, b = domains.boxes["a"], domains.boxes["b"]
    a1, b1 = await a.node(), await b.node()
    await b.endpoint(b1, "nse-old", services=["db"])
    versions: asyncio.Queue[Connection] = asyncio.Queue()
    client = a.client(a1, keep=True, on_change=versions.put_nowait)
    first = await client.chain.run_request(request_for("db@b", "c-6"), CallContext())
    assert await versions.get() == first
    await b.remove_endpoint(b1, "nse-old")
    await b.endpoint(b1, "nse-new", services=["db"])
    assert client.heal is not None
    client.heal.heal_now("c-6", reselect=True)
    async with asyncio.timeout(5):
        healed = await versions.get()
    assert healed.network_service_endpoint_name == "nse-new@b"
    assert names(healed)[-1] == "nse-new"
    await client.chain.run_close(healed, CallContext())


async def test_a_floating_domain_holds_a_registration_served_from_its_domain() -> None:
    async with two_domains(names=("a", "b", "f"), floating=frozenset({"f"})) as domains:
        a, b, f = (domains.boxes[d] for d in ("a", "b", "f"))
        a1, b1 = await a.node(), await b.node()
        await a.endpoint(a1, "nse-1", services=["svc"])
        with pytest.raises(InvalidArgument, match=r"network_service_names\[0\]"):
            await a.endpoints.register(NetworkServiceEndpoint(
                name="nse-1@f", network_service_names=["Bad_Svc@f"]))
        assert [e async for e in f.endpoints.find(Query(NetworkServiceEndpoint()))] == []
        # Published through a's registry and gateway into f, which has no nodes.
        await a.endpoints.register(NetworkServiceEndpoint(
            name="nse-1@f", network_service_names=["svc@f"], url="tcp://ignored:1"))
        stored = [e.record async for e in f.endpoints.find(Query(NetworkServiceEndpoint()))]
        assert [(r.name, list(r.network_service_names), r.url) for r in stored] == [
            ("nse-1", ["svc"], domains.gateways["a"].advertise)]  # requests go to a's gateway

        client = b.client(b1, "web")
        conn = await client.chain.run_request(request_for("svc@f", "c-f"), CallContext())
        assert names(conn) == [
            "web", "nsmgr-b-n1", "forwarder-b-n1", "gateway-b", "gateway-a", "nsmgr-a-n1",
            "forwarder-a-n1", "nse-1",
        ]
        assert (conn.network_service, conn.network_service_endpoint_name) == (
            "svc@f", "nse-1@f")
        refreshed = await client.chain.run_request(refresh_of(conn), CallContext())
        await client.chain.run_close(refreshed, CallContext())
        assert open_connections(domains) == 0

        await a.endpoints.unregister(NetworkServiceEndpoint(name="nse-1@f"))
        assert [e async for e in f.endpoints.find(Query(NetworkServiceEndpoint()))] == []
        with pytest.raises(NotFound, match="'svc@f' not found"):
            await client.chain.run_request(request_for("svc@f", "c-g"), CallContext())


async def test_only_a_floating_domain_takes_registrations(domains: TwoDomains) -> None:
    a = domains.boxes["a"]
    with pytest.raises(PermissionDenied, match="other domains may not register"):
        await a.endpoints.register(NetworkServiceEndpoint(
            name="nse-1@b", network_service_names=["svc@b"]))
    gateway_a = domains.gateways["a"].gateway
    assert not gateway_a.published.has("nse-1@b")  # a refused publication is not remembered


async def test_a_publication_forgotten_by_a_restart_is_refused_not_looped() -> None:
    async with two_domains(names=("a", "b", "f"), floating=frozenset({"f"})) as domains:
        a, b = domains.boxes["a"], domains.boxes["b"]
        a1, b1 = await a.node(), await b.node()
        await a.endpoint(a1, "nse-1", services=["svc"])
        await a.endpoints.register(NetworkServiceEndpoint(
            name="nse-1@f", network_service_names=["svc@f"]))
        await domains.stop_gateway("a")
        await domains.start_gateway("a")  # knows nothing it published before
        with pytest.raises(FailedPrecondition, match="'nse-1@f' is registered at this hop's own"):
            await b.client(b1).chain.run_request(request_for("svc@f", "c-l"), CallContext())


async def test_a_domain_found_by_dns_srv(tmp_path: Path) -> None:
    """Gateway a has no domains file: b's gateway comes from the SRV record
    _vwire-gateway._tcp.b, served by a DNS server on loopback."""
    gateway_a = f"unix://{tmp_path}/gateway-a.sock"
    async with Sandbox(domain="a", gateway=gateway_a) as a, Sandbox(domain="b") as b:
        b_gateway = Gateway(GatewaySettings(
            domain="b", listen=["tcp://127.0.0.1:0"], insecure=True, registry=b.registry_url,
            dns_server="off"))
        await b_gateway.start()
        try:
            port = b_gateway.bound[0].port
            records = {"_vwire-gateway._tcp.b.": [f"0 0 {port} localhost."]}
            async with dns_stub(records) as dns:
                a_gateway = Gateway(GatewaySettings(
                    domain="a", listen=[gateway_a], registry=a.registry_url,
                    dns_server=dns.address))
                await a_gateway.start()
                try:
                    a1, b1 = await a.node(), await b.node()
                    await b.endpoint(b1, "nse-b", services=["db"])
                    conn = await a.client(a1).chain.run_request(
                        request_for("db@b", "c-d"), CallContext())
                    assert conn.network_service_endpoint_name == "nse-b@b"
                    srv = "_vwire-gateway._tcp.b."
                    assert set(dns.queries) == {f"{srv} SRV", f"{srv} TXT"}
                    with pytest.raises(NotFound, match=r"no SRV record _vwire-gateway\._tcp\.zz"):
                        await a.client(a1).chain.run_request(
                            request_for("db@zz", "c-z"), CallContext())
                finally:
                    await a_gateway.stop(0.1)
        finally:
            await b_gateway.stop(0.1)


async def test_the_registry_publishes_only_what_its_registration_policy_allows(
    tmp_path: Path,
) -> None:
    """The registry process checks a publication as any registration (``Publish`` behind
    ``AuthorizeRegistration``): a caller the policy does not allow publishes nothing."""
    policy = StaticPolicy(parse_policy(
        "registrations: [{rule: only-alice, services: ['**'], "
        "endpoints: ['spiffe://a.vwire/nse/alice']}]"))
    async with two_domains(names=("a", "f"), floating=frozenset({"f"})) as domains:
        a, f = domains.boxes["a"], domains.boxes["f"]
        registry = Registry(open_store("memory://"), policy=policy, domain="a",
                            gateway=a.pool.get(domains.gateway_urls["a"]))
        url = f"unix://{tmp_path}/registry-a.sock"
        await registry.start([parse_address(url)])
        try:
            endpoints = RegistryChain([RemoteRegistry(ENDPOINT, a.pool.get(url))])
            with pytest.raises(PermissionDenied, match="no rule allows"):
                await endpoints.register(NetworkServiceEndpoint(
                    name="nse-1@f", network_service_names=["svc@f"]))
        finally:
            await registry.stop(0.1)
        assert [e async for e in f.endpoints.find(Query(NetworkServiceEndpoint()))] == []


async def test_the_remote_service_s_matches_select_by_the_client_s_labels(
    domains: TwoDomains,
) -> None:
    a, b = domains.boxes["a"], domains.boxes["b"]
    a1, b1 = await a.node(), await b.node()
    for name, role in (("nse-primary", "primary"), ("nse-replica", "replica")):
        await b.endpoint(b1, name, services=["db"])
        record = NetworkServiceEndpoint(name=name, network_service_names=["db"],
                                        url=b1.nsmgr_url)
        record.network_service_labels["db"].labels["role"] = role
        await b.endpoints.register(record)
    service = NetworkService(name="db")
    match = service.matches.add()
    match.source_selector["app"] = "web"
    match.routes.add().destination_selector["role"] = "primary"
    await b.services.register(service)
    client = a.client(a1, "web")
    for i in range(4):  # round robin would alternate without the match
        request = request_for("db@b", f"c-m{i}")
        request.connection.labels["app"] = "web"
        conn = await client.chain.run_request(request, CallContext())
        assert conn.network_service_endpoint_name == "nse-primary@b"


async def test_a_gateway_that_came_back_is_dialled_at_once(domains: TwoDomains) -> None:
    """Gateway a forgets its channel to gateway b when b did not answer, so the first request
    after b is back goes through (not only after the old channel's reconnect back-off)."""
    a, b = domains.boxes["a"], domains.boxes["b"]
    a1, b1 = await a.node(), await b.node()
    await b.endpoint(b1, "nse-b", services=["db"])
    client = a.client(a1, "web")
    await client.chain.run_request(request_for("db@b", "c-u0"), CallContext())
    await domains.stop_gateway("b")
    with pytest.raises(FabricError):
        await client.chain.run_request(request_for("db@b", "c-u1"), CallContext())
    await domains.start_gateway("b")
    conn = await client.chain.run_request(request_for("db@b", "c-u2"), CallContext())
    assert conn.network_service_endpoint_name == "nse-b@b"
