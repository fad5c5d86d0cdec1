"""Element ``SelectForwarder``: which of this node's forwarders carries a connection.

Contract: keeps the forwarder the connection was built through while it is registered, unless a
rebuild was asked for (``ctx.values[REBUILD]``: a heal or a retry); otherwise picks one from the
node's :class:`Forwarders` (rotating; ``NotFound`` when none is registered). It points the request
at it (``ctx.values[CLIENT_URL]``, and ``NEXT_HOP_ID`` for the signature); the choice is kept in
the metadata once the request succeeded. With no forwarder registered it raises
:class:`NoForwarder` (``NotFound``): a fault of this node, which ``Retry`` does not count against
the endpoint. Close passes through (``Connect`` closes where the request went). Place it behind
the endpoint choice and ``HandRoute``.
"""

from __future__ import annotations

from typing import Protocol

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import Key
from sdk.errors import NotFound
from sdk.networkservice.client import CLIENT_URL
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.rebuild import REBUILD
from sdk.networkservice.token import NEXT_HOP_ID


class NoForwarder(NotFound):
    """This node has no forwarder to carry the request: no endpoint is to blame."""


#: Metadata: the forwarder the connection was built through.
_KEPT: Key[str] = Key("forwarder.kept")


class Forwarders(Protocol):
    """The forwarders of this node, as they registered."""

    def url(self, name: str) -> str | None:
        """Where forwarder ``name`` serves, or None when it is not registered (any more)."""

    def spiffe_id(self, name: str) -> str:
        """The identity forwarder ``name`` registered with ('' without one)."""

    def pick(self) -> tuple[str, str]:
        """A usable forwarder's (name, url), rotating; NotFound when there is none."""


class SelectForwarder(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, forwarders: Forwarders) -> None:
        self.forwarders = forwarders

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        ctx = next.ctx
        kept = ctx.metadata.get(_KEPT)
        url = self.forwarders.url(kept) if kept is not None else None
        if kept is not None and url is not None and not ctx.values.get(REBUILD):
            name = kept
        else:
            try:
                name, url = self.forwarders.pick()
            except NotFound as exc:
                raise NoForwarder(str(exc)) from None
        ctx.values[CLIENT_URL] = url
        ctx.values[NEXT_HOP_ID] = self.forwarders.spiffe_id(name)
        reply = await next.request(request)
        ctx.metadata[_KEPT] = name
        return reply
