"""Attacks across domains: what another domain says is hostile until checked.

* A lying gateway answers a find for ``db@evil`` with a bare ``nse-local`` (posing as an
  endpoint of the asking domain) and a record of a third domain: only ``...@evil`` records reach
  the asking domain's registry and nsmgrs.
* A gateway answers other domains for its own domain only: a find for a third domain from a
  caller with a gateway's identity is refused (no open relay).
* In a floating domain only a gateway publishes, in its own name (its ID last in ``path_ids``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import yaml

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from gateway.app import Gateway
from gateway.settings import GatewaySettings
from sdk.chain import CallContext
from sdk.errors import PermissionDenied
from sdk.grpcutil import parse_address, serve, stop
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Event, Query, RegistryChain, RegistryCursor, RegistryElement
from sdk.registry.exportdomain import ExportDomain
from sdk.registry.importdomain import ImportDomain
from sdk.registry.kinds import ENDPOINT, SERVICE
from sdk.registry.memory import MemoryStore
from sdk.registry.persist import Persist
from sdk.registry.server import add_registry
from sdk.testing import Sandbox

GATEWAY_ID = "spiffe://b.vwire/gateway/gateway-b"


class Liar(RegistryElement[NetworkServiceEndpoint]):
    """A gateway of domain 'evil' answering every find with names it does not own."""

    async def find(self, query: Query[NetworkServiceEndpoint],
                   next: RegistryCursor[NetworkServiceEndpoint],
                   ) -> AsyncIterator[Event[NetworkServiceEndpoint]]:
        for name, service in (("nse-local", "db"), ("x@c", "db@c"), ("mixed@evil", "db@c"),
                              ("good@evil", "db@evil")):
            yield Event(NetworkServiceEndpoint(
                name=name, network_service_names=[service], url="tcp://203.0.113.9:1"))


async def test_records_outside_the_answering_domain_are_dropped(tmp_path: Path) -> None:
    evil_url = f"unix://{tmp_path}/evil.sock"
    gateway_url = f"unix://{tmp_path}/gateway-a.sock"
    domains_file = tmp_path / "domains.yaml"
    domains_file.write_text(yaml.safe_dump({"domains": {"evil": evil_url}}))
    evil = grpc.aio.server()
    add_registry(evil, RegistryChain([]), RegistryChain([Liar()]))
    await serve(evil, [parse_address(evil_url)], insecure_tcp=False)
    try:
        async with Sandbox(domain="a", gateway=gateway_url) as a:
            gateway = Gateway(GatewaySettings(
                domain="a", listen=[gateway_url], registry=a.registry_url,
                domains_file=str(domains_file), dns_server="off"))
            await gateway.start()
            try:
                endpoints = RegistryChain([RemoteRegistry(ENDPOINT, a.pool.get(a.registry_url))])
                found = [e.record.name async for e in endpoints.find(
                    Query(NetworkServiceEndpoint(network_service_names=["db@evil"])))]
            finally:
                await gateway.stop(0.1)
    finally:
        await stop(evil, [parse_address(evil_url)], 0.1)
    assert found == ["good@evil"]


async def test_a_gateway_is_no_open_relay() -> None:
    imported = RegistryChain([ImportDomain[NetworkServiceEndpoint]("unix:///x.sock")])
    query = Query(NetworkServiceEndpoint(name="@c"))
    with pytest.raises(PermissionDenied, match="answers other gateways for its own domain only"):
        [e async for e in imported.find(query, CallContext(peer=GATEWAY_ID))]


@pytest.mark.parametrize(("peer", "path_ids"), [
    ("spiffe://b.vwire/nsmgr/nsmgr-n1", ["spiffe://b.vwire/nsmgr/nsmgr-n1"]),  # no gateway
    (GATEWAY_ID, ["spiffe://c.vwire/gateway/gateway-c"]),  # in another gateway's name
    (GATEWAY_ID, []),
])
async def test_only_a_gateway_publishes_in_a_floating_domain_in_its_own_name(
    peer: str, path_ids: list[str],
) -> None:
    stored: RegistryChain[NetworkServiceEndpoint] = RegistryChain(
        [Persist(ENDPOINT, MemoryStore())])
    floating = RegistryChain([ExportDomain("f", stored, "", floating=True)])
    record = NetworkServiceEndpoint(name="nse@f", network_service_names=["db@f"],
                                    url="tcp://203.0.113.9:1", path_ids=path_ids)
    with pytest.raises(PermissionDenied, match="may not publish"):
        await floating.register(record, CallContext(peer=peer))
    assert [e async for e in stored.find(Query(NetworkServiceEndpoint()))] == []
    record.path_ids[:] = [GATEWAY_ID]
    await floating.register(record, CallContext(peer=GATEWAY_ID))
    assert [e.record.name async for e in stored.find(Query(NetworkServiceEndpoint()))] == ["nse"]


async def test_services_cannot_float() -> None:
    stored: RegistryChain[NetworkService] = RegistryChain([Persist(SERVICE, MemoryStore())])
    floating = RegistryChain([ExportDomain("f", stored, "", floating=True)])
    with pytest.raises(PermissionDenied, match="other domains may not register"):
        await floating.register(NetworkService(name="db@f"), CallContext(peer=GATEWAY_ID))
