"""Registry element ``ToGateway``: names of other domains go to this domain's gateway.

Contract (nsmgr's and the domain registry's chains, for both record kinds): a find whose
template names another domain (``db@cloud-b``, ``@cloud-b``: :func:`sdk.registry.domainnames.
query_domain`) is answered by ``gateway`` — the gateway's registry API, a terminal element such
as ``RemoteRegistry`` — and the rest of the chain is not run; a query naming this process's own
domain (``own``) goes on with the suffix removed, as a local query. Register and unregister of a
record named ``name@other`` go to the gateway too (which accepts them only for a floating domain);
``name@own`` goes on as ``name``. Without a gateway, a name of another domain is refused with
``FailedPrecondition`` saying to configure ``--gateway``. A record sent on to the gateway is
validated first, as if its names had no ``@other`` (``InvalidArgument`` naming the field; nothing
is sent; an endpoint's URL may be empty: the gateway puts its own), since the elements behind,
which would validate it, do not run for it. With ``defer`` (the domain registry) such a record
goes on instead in its local form, marked for its domain (``ctx.values[PUBLISH_TO]``), so the
registry's own validation and registration policy check it before ``Publish`` sends it to the
gateway. Place it first (in front of ``Validate``: names with ``@`` are not valid record names).
Keeps nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.domains import split
from sdk.errors import FailedPrecondition
from sdk.registry.core import Event, Query, RegistryCursor, RegistryElement
from sdk.registry.domainnames import query_domain, unqualify
from sdk.registry.publish import PUBLISH_TO
from sdk.registry.validate import validate_endpoint, validate_service

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)
_GATEWAY_SETS_URL = "unix:///the-gateway-sets-its-url"  # stands in until the gateway sets it


class ToGateway(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, own: str, gateway: RegistryElement[M] | None = None,
                 defer: bool = False) -> None:
        self.own = own
        self.gateway: RegistryElement[M] | None = gateway
        self.defer = defer

    def _gateway(self, name: str, domain: str) -> RegistryElement[M]:
        if self.gateway is None:
            raise FailedPrecondition(
                f"{name!r} is in domain {domain!r}, not this domain ({self.own!r}): set "
                "--gateway to this domain's gateway to reach other domains"
            )
        return self.gateway

    async def find(self, query: Query[M], next: RegistryCursor[M]) -> AsyncIterator[Event[M]]:
        domain = query_domain(query.template)
        if domain is None:
            source = next.find(query)
        elif domain == self.own:
            source = next.find(Query(unqualify(query.template, domain), query.watch))
        else:
            source = self._gateway(query.template.name or f"@{domain}", domain).find(query, next)
        async for event in source:
            yield event

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        _, domain = split(record.name)
        if domain is None:
            return await next.register(record)
        if domain == self.own:
            return await next.register(unqualify(record, domain))
        gateway = self._gateway(record.name, domain)
        local = unqualify(record, domain)
        if isinstance(local, NetworkServiceEndpoint):
            local.url = local.url or _GATEWAY_SETS_URL
        if self.defer:
            next.ctx.values[PUBLISH_TO] = domain
            return await next.register(local)
        if isinstance(local, NetworkServiceEndpoint):
            validate_endpoint(local)
        else:
            validate_service(local)
        return await gateway.register(record, next)

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        _, domain = split(record.name)
        if domain is None:
            await next.unregister(record)
        elif domain == self.own:
            await next.unregister(unqualify(record, domain))
        elif self.defer:
            self._gateway(record.name, domain)
            next.ctx.values[PUBLISH_TO] = domain
            await next.unregister(unqualify(record, domain))
        else:
            await self._gateway(record.name, domain).unregister(record, next)
