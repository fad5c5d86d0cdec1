"""Registry element ``ImportDomain``: a gateway hands its domain the records of other domains.

Contract (a gateway's chains, behind ``ExportDomain``): a find goes on (to ``ToDomains``) and
every record that comes back keeps its ``name@domain`` names, gets this gateway's URL for its
own domain (``local_url``: the domain's nsmgrs send the requests for it here) and this gateway's
SPIFFE ID appended to ``path_ids`` (the audience the local nsmgr signs for). Only callers of
this domain may ask: a caller whose SPIFFE ID is a gateway's (``spiffe://<td>/gateway/...``) is
refused with ``PermissionDenied`` — a gateway answers other domains for its own domain only, it
is no open relay.

Register and unregister of an endpoint named ``name@F`` publish a local endpoint in floating
domain ``F`` (a domain that only holds registrations, NSM's floating interdomain): the record
goes on (to F's gateway) with this gateway's public URL (``public_url``: other domains send the
requests for it here) and ID last in ``path_ids``, and ``published`` remembers ``name`` as
published in ``F`` (forgotten on unregister) so that requests for ``name@F`` arriving from other
domains are served here. Keeps nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.chain import CallContext
from sdk.domains import split
from sdk.errors import PermissionDenied
from sdk.registry.core import Event, Query, RegistryCursor, RegistryElement
from sdk.registry.exportdomain import handed_on, is_gateway
from sdk.security.peer import identity_of
from sdk.security.source import SvidSource

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)



def from_gateway(ctx: CallContext) -> bool:
    """Whether the caller of ``ctx`` proved a gateway's identity."""
    caller = identity_of(ctx.peer)
    return caller is not None and is_gateway(caller)


class Published:
    """The local endpoints a gateway published in floating domains: name → domains."""

    def __init__(self) -> None:
        self._domains: dict[str, set[str]] = {}

    def add(self, name: str, domain: str) -> None:
        self._domains.setdefault(name, set()).add(domain)

    def remove(self, name: str, domain: str) -> None:
        self._domains.get(name, set()).discard(domain)

    def has(self, qualified: str) -> bool:
        """Whether ``name@domain`` was published here."""
        name, domain = split(qualified)
        return domain is not None and domain in self._domains.get(name, set())

    def domains(self) -> set[str]:
        return {d for found in self._domains.values() for d in found}


class ImportDomain(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, local_url: str, source: SvidSource | None = None,
                 published: Published | None = None, public_url: str = "") -> None:
        self.local_url = local_url
        self.public_url = public_url
        self.source = source
        self.published = published if published is not None else Published()

    def _check(self, ctx: CallContext) -> None:
        if from_gateway(ctx):
            raise PermissionDenied(
                f"gateway {identity_of(ctx.peer)} asked for another domain: a gateway answers "
                "other gateways for its own domain only"
            )

    async def find(self, query: Query[M], next: RegistryCursor[M]) -> AsyncIterator[Event[M]]:
        self._check(next.ctx)
        async for event in next.find(query):
            yield Event(handed_on(event.record, self.local_url, self.source), event.deleted)

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        self._check(next.ctx)
        name, domain = split(record.name)
        outgoing = handed_on(self._copy(record), self.public_url, self.source)
        reply = await next.register(outgoing)
        if domain is not None and isinstance(record, NetworkServiceEndpoint):
            self.published.add(name, domain)
        return reply

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        self._check(next.ctx)
        name, domain = split(record.name)
        await next.unregister(record)
        if domain is not None:
            self.published.remove(name, domain)

    @staticmethod
    def _copy(record: M) -> M:
        clone = type(record)()
        clone.CopyFrom(record)
        return clone
