"""Registry element ``ImportDomain``: a gateway hands its domain the records of other domains.

Contract (a gateway's chains, behind ``ExportDomain``): a find goes on (to ``ToDomains``) and
every record that comes back keeps its ``name@domain`` names, gets this gateway's URL for its
own domain (``local_url``: the domain's nsmgrs send the requests for it here) and this gateway's
SPIFFE ID appended to ``path_ids`` (the audience the local nsmgr signs for). Only callers of
this domain may ask: a caller whose SPIFFE ID is a gateway's (``spiffe://<td>/gateway/...``) is
refused with ``PermissionDenied`` — a gateway answers other domains for its own domain only, it
is no open relay. Register and unregister pass unchanged. Keeps nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.chain import CallContext
from sdk.errors import InvalidArgument, PermissionDenied
from sdk.registry.core import Event, Query, RegistryCursor, RegistryElement
from sdk.registry.exportdomain import handed_on
from sdk.security.peer import identity_of
from sdk.security.source import SvidSource
from sdk.security.spiffe import SpiffeId

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)

#: The SPIFFE ID kind of a domain's gateway.
GATEWAY_KIND = "gateway"


def from_gateway(ctx: CallContext) -> bool:
    """Whether the caller of ``ctx`` proved a gateway's identity."""
    caller = identity_of(ctx.peer)
    if caller is None:
        return False
    try:
        return SpiffeId.parse(caller).kind == GATEWAY_KIND
    except InvalidArgument:
        return False


class ImportDomain(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, local_url: str, source: SvidSource | None = None) -> None:
        self.local_url = local_url
        self.source = source

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
        return await next.register(record)

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        self._check(next.ctx)
        await next.unregister(record)
