"""Registry element ``ToDomains``: a gateway asks the gateway of the domain a query names.

Contract (a gateway's chains): a find, register or unregister naming domain ``D``
(:func:`sdk.registry.domainnames.query_domain`; for register/unregister the record's name) is
sent unchanged to D's gateway, found by ``resolver`` (:mod:`sdk.domains`), over a channel of
``pool``; its answer comes back as D's gateway gave it (names ``...@D``, D's gateway's URL and
ID last in ``path_ids``). A request naming no domain is refused with ``InvalidArgument``; an
unknown domain with the resolver's ``NotFound``; a find that cannot reach the gateway
(``Unavailable`` before any answer) is made once more on a fresh channel (a gateway that came
back is reached at once, not after the old channel's reconnect back-off). Terminal: place it
last. Keeps nothing.

What another domain answers is hostile until checked: a found record whose name or service
names are not all ``...@D`` (e.g. a bare ``nse`` that would pose as an endpoint of this domain,
or a name of a third domain) is dropped and logged, never handed on.

``learn(url, trust_domain)``, when given, is told the trust domain of the hop each found endpoint
record leads to (that of the last ``path_ids`` entry): a record of a floating domain leads to the
publishing domain's gateway, whose trust domain the domains file does not say.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

import structlog

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.channels import ChannelPool
from sdk.domains import DomainResolver, split
from sdk.errors import InvalidArgument, Unavailable
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Event, Query, RegistryCursor, RegistryElement
from sdk.registry.domainnames import query_domain
from sdk.registry.kinds import RecordKind
from sdk.security.spiffe import SpiffeId

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)
_log = structlog.get_logger("sdk.registry.todomains")


def _all_in(record: NetworkService | NetworkServiceEndpoint, domain: str | None) -> bool:
    """Whether every name ``record`` carries is ``...@domain``."""
    names = [record.name]
    if isinstance(record, NetworkServiceEndpoint):
        names += [*record.network_service_names, *record.network_service_labels]
    return all(split(name)[1] == domain and split(name)[0] for name in names)


class ToDomains(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, kind: RecordKind[M], resolver: DomainResolver, pool: ChannelPool,
                 learn: Callable[[str, str], None] | None = None) -> None:
        self.kind: RecordKind[M] = kind
        self.resolver = resolver
        self.pool = pool
        self.learn = learn

    async def _remote(self, domain: str | None, what: str) -> tuple[str, RemoteRegistry[M]]:
        if domain is None:
            raise InvalidArgument(what, "names no domain: a gateway relays 'name@domain' only")
        found = await self.resolver.resolve(domain)
        return found.gateway, RemoteRegistry(self.kind, self.pool.get(found.gateway))

    async def find(self, query: Query[M], next: RegistryCursor[M]) -> AsyncIterator[Event[M]]:
        domain = query_domain(query.template)
        url, remote = await self._remote(domain, "query")
        answered = False
        try:
            async for event in self._checked(remote.find(query, next), domain):
                answered = True
                yield event
            return
        except Unavailable:
            if answered:
                raise
            self.pool.forget(url)  # restarted? dial anew rather than wait out the back-off
        remote = RemoteRegistry(self.kind, self.pool.get(url))
        async for event in self._checked(remote.find(query, next), domain):
            yield event

    async def _checked(self, events: AsyncIterator[Event[M]], domain: str | None,
                       ) -> AsyncIterator[Event[M]]:
        async for event in events:
            if _all_in(event.record, domain):
                self._learn(event.record)
                yield event
            else:
                _log.warning("dropped a record another domain's gateway answered with names "
                             "outside its domain", domain=domain, name=event.record.name)

    def _learn(self, record: M) -> None:
        if self.learn is None or not isinstance(record, NetworkServiceEndpoint):
            return
        if record.url and record.path_ids:
            with contextlib.suppress(InvalidArgument):  # not a SPIFFE ID: nothing to learn
                self.learn(record.url, SpiffeId.parse(record.path_ids[-1]).trust_domain)

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        _, remote = await self._remote(split(record.name)[1], "name")
        return await remote.register(record, next)

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        _, remote = await self._remote(split(record.name)[1], "name")
        await remote.unregister(record, next)
