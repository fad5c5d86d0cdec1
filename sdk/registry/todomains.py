"""Registry element ``ToDomains``: a gateway asks the gateway of the domain a query names.

Contract (a gateway's chains): a find, register or unregister naming domain ``D``
(:func:`sdk.registry.domainnames.query_domain`; for register/unregister the record's name) is
sent unchanged to D's gateway, found by ``resolver`` (:mod:`sdk.domains`), over a channel of
``pool``; its answer comes back as D's gateway gave it (names ``...@D``, D's gateway's URL and
ID last in ``path_ids``). A request naming no domain is refused with ``InvalidArgument``; an
unknown domain with the resolver's ``NotFound``. Terminal: place it last. Keeps nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.channels import ChannelPool
from sdk.domains import DomainResolver, split
from sdk.errors import InvalidArgument
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Event, Query, RegistryCursor, RegistryElement
from sdk.registry.domainnames import query_domain
from sdk.registry.kinds import RecordKind

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)


class ToDomains(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, kind: RecordKind[M], resolver: DomainResolver, pool: ChannelPool) -> None:
        self.kind: RecordKind[M] = kind
        self.resolver = resolver
        self.pool = pool

    async def _remote(self, domain: str | None, what: str) -> RemoteRegistry[M]:
        if domain is None:
            raise InvalidArgument(what, "names no domain: a gateway relays 'name@domain' only")
        found = await self.resolver.resolve(domain)
        return RemoteRegistry(self.kind, self.pool.get(found.gateway))

    async def find(self, query: Query[M], next: RegistryCursor[M]) -> AsyncIterator[Event[M]]:
        remote = await self._remote(query_domain(query.template), "query")
        async for event in remote.find(query, next):
            yield event

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        remote = await self._remote(split(record.name)[1], "name")
        return await remote.register(record, next)

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        remote = await self._remote(split(record.name)[1], "name")
        await remote.unregister(record, next)
