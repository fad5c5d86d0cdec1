"""Registry element ``ExportDomain``: a gateway answers other domains from its own registry.

Contract (a gateway's chains): a find whose template names this gateway's domain ``own`` (or no
domain) is answered from ``local`` (the domain registry) with the suffix removed from the
query; every record it yields is renamed for other domains (:func:`sdk.registry.domainnames.
qualify`: ``nse@own``, ``db@own``), its URL replaced by ``public_url`` (this gateway, the one
address other domains reach) and this gateway's SPIFFE ID (from ``source``) appended to its
``path_ids`` (the audience remote hops sign for). Other finds go on. Register and unregister of a
record naming ``own`` are refused with ``PermissionDenied`` (other domains do not write in this
domain's registry); others go on. Place it first. Keeps nothing.

With ``floating`` (a domain that only holds registrations, NSM's floating interdomain), another
domain's gateway may register and unregister endpoints ``name@own``: they are stored as ``name``
with the URL and ``path_ids`` that gateway gave them (its own public URL and ID last), and finds
hand them on unchanged but for the ``@own`` names — requests for them go straight to the
publishing domain's gateway. Only endpoint records may float; a floating domain's own services
are registered in its registry as usual. A caller that proved an identity (mTLS) must be a
gateway and the last ID of the record's ``path_ids`` (the audience requests for it will be
signed for), else ``PermissionDenied``: nobody publishes in another gateway's name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.domains import split
from sdk.errors import InvalidArgument, PermissionDenied
from sdk.registry.core import Event, Query, RegistryChain, RegistryCursor, RegistryElement
from sdk.registry.domainnames import qualify, query_domain, unqualify
from sdk.security.peer import identity_of
from sdk.security.source import SvidSource
from sdk.security.spiffe import SpiffeId

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)


def is_gateway(identity: str) -> bool:
    """Whether ``identity`` is a gateway's SPIFFE ID (``spiffe://<td>/gateway/<name>``)."""
    try:
        return SpiffeId.parse(identity).kind == "gateway"
    except InvalidArgument:
        return False


def _check_publisher(record: M, peer: str) -> None:
    caller = identity_of(peer)
    if caller is None:
        return  # no mTLS (development): nobody proved anything
    last = record.path_ids[-1] if record.path_ids else ""
    if not is_gateway(caller) or last != caller:
        raise PermissionDenied(
            f"{caller} may not publish {record.name!r}: only a gateway publishes in a floating "
            f"domain, in its own name (last path_ids entry {last or 'missing'})"
        )


def handed_on(record: M, url: str, source: SvidSource | None) -> M:
    """``record`` as a gateway hands it on: its URL ``url``, the gateway's ID last in
    ``path_ids`` (when it has one and it is not last already)."""
    if url and isinstance(record, NetworkServiceEndpoint):
        record.url = url
    if source is not None:
        own = str(source.current().spiffe_id)
        if not record.path_ids or record.path_ids[-1] != own:
            record.path_ids.append(own)
    return record


class ExportDomain(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, own: str, local: RegistryChain[M], public_url: str,
                 source: SvidSource | None = None, floating: bool = False) -> None:
        self.own = own
        self.local: RegistryChain[M] = local
        self.public_url = public_url
        self.source = source
        self.floating = floating

    async def find(self, query: Query[M], next: RegistryCursor[M]) -> AsyncIterator[Event[M]]:
        domain = query_domain(query.template)
        if domain not in (None, self.own):
            async for event in next.find(query):
                yield event
            return
        local = Query(unqualify(query.template, self.own), query.watch)
        async for event in self.local.find(local, next.ctx):
            record = qualify(event.record, self.own)
            if not self._floats(record):
                record = handed_on(record, self.public_url, self.source)
            yield Event(record, event.deleted)

    def _floats(self, record: M) -> bool:
        return self.floating and isinstance(record, NetworkServiceEndpoint)

    def _ours(self, record: M) -> bool:
        """Whether ``record`` names this domain (refused unless it may float here)."""
        if split(record.name)[1] not in (None, self.own):
            return False
        if not self._floats(record):
            raise PermissionDenied(
                f"{record.name!r}: other domains may not register or unregister in domain "
                f"{self.own!r}; register with this domain's nsmgr"
            )
        return True

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        if not self._ours(record):
            return await next.register(record)
        _check_publisher(record, next.ctx.peer)
        stored = await self.local.register(unqualify(record, self.own), next.ctx)
        return qualify(stored, self.own)

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        if not self._ours(record):
            await next.unregister(record)
            return
        await self.local.unregister(unqualify(record, self.own), next.ctx)
