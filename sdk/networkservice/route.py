"""Elements ``HandRoute`` and ``FollowRoute``: a node manager chooses where a connection goes, its
forwarder dials it.

A request passes a node's manager once: the nsmgr authorizes it, chooses the endpoint (on the
client's node) and where the endpoint is reached (its own socket when it registered on this
node, else the nsmgr of its node or a gateway), and hands the request with that *route* to one
of its forwarders, which programs its side and sends the request on along the route itself.

``HandRoute()`` (nsmgr) sits right behind ``RouteToEndpoint`` and in front of
``SelectForwarder``: it takes the next hop ``RouteToEndpoint`` chose (``CLIENT_URL``,
``NEXT_HOP_ID`` and ``MECHANISM_CLASS``) as the :class:`Route` the forwarder is to follow. The
route goes along the call to the forwarder in three headers (:data:`ROUTE_HEADERS`, through
``ctx.values[SEND_HEADERS]``, which ``Connect`` sends and remembers with the connection, so a
close carries the route of the request it closes), and its hash is the ``nxt`` claim of this
hop's path token (``ctx.values[ROUTE_CLAIM]``, signed by ``SignPathSegment``). Keeps nothing;
close passes through.

``FollowRoute(nsmgr_id)`` (forwarder) sits first behind the server prefix: it reads the route
from the call's headers and points the request at it (``CLIENT_URL``, ``NEXT_HOP_ID`` and
``MECHANISM_CLASS``, for ``FilterMechanisms``, ``SignPathSegment`` and ``Connect``). A request
without a route, or with a malformed one, is refused with ``FailedPrecondition`` naming what is
wrong: requests reach a forwarder only from its nsmgr. When the path was verified (with SVIDs:
``ctx.values[PATH_IDS]``) the previous segment must be signed by this forwarder's own nsmgr
(``nsmgr_id()``, the identity it registered with) and the route must be the one that nsmgr
signed (its token's ``nxt`` claim, ``ctx.values[SIGNED_ROUTE]``); otherwise ``PermissionDenied``
(counted as a ``route`` refusal): a workload cannot send the forwarder anywhere the nsmgr did not
choose, nor skip its authorization. A close carrying a route is checked the same way and points
``Connect`` at it (which closes where its last request went when it remembers one: the route
matters only to a restarted forwarder). Keeps nothing.

Without SVIDs (development mode) the route is followed as sent: the forwarder's socket file mode
is what keeps workloads away from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from api.mechanisms import LOCAL, REMOTE
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import FailedPrecondition
from sdk.grpcutil import ROUTE_HEADERS
from sdk.networkservice.client import CLIENT_URL, SEND_HEADERS
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.toendpoint import MECHANISM_CLASS
from sdk.networkservice.token import (
    NEXT_HOP_ID,
    PATH_IDS,
    ROUTE_CLAIM,
    SIGNED_ROUTE,
    field_digest,
)
from sdk.security import audit

_URL, _ID, _CLASS = ROUTE_HEADERS
#: Longest URL and SPIFFE ID a route may carry (a SPIFFE ID is at most 2048 bytes).
MAX_URL = 1024
MAX_ID = 2048


class Route(NamedTuple):
    """Where a forwarder sends a request on: the next hop's URL, the SPIFFE ID its token is
    signed for ('' without SVIDs) and the class of mechanism it takes (``LOCAL``/``REMOTE``)."""

    url: str
    spiffe_id: str
    mechanism_class: str

    def headers(self) -> dict[str, str]:
        """The call headers that carry this route."""
        return {_URL: self.url, _ID: self.spiffe_id, _CLASS: self.mechanism_class}

    def binding(self) -> str:
        """The ``nxt`` claim that binds a token to this route."""
        return field_digest(list(self))


def route_from(headers: Mapping[str, str]) -> Route | None:
    """The route ``headers`` carry (None when they carry none); a malformed one raises
    ``FailedPrecondition`` naming the header."""
    url, identity, cls = (headers.get(name) for name in ROUTE_HEADERS)
    if url is None and identity is None and cls is None:
        return None
    if not url or len(url) > MAX_URL or not url.isprintable():
        raise FailedPrecondition(
            f"call header {_URL} must name the next hop's URL (printable, at most {MAX_URL} "
            "characters)"
        )
    if identity is None or len(identity) > MAX_ID or not identity.isprintable():
        raise FailedPrecondition(
            f"call header {_ID} must hold the next hop's SPIFFE ID (empty without SVIDs, at most "
            f"{MAX_ID} characters)"
        )
    if cls not in (LOCAL, REMOTE):
        raise FailedPrecondition(f"call header {_CLASS} must be {LOCAL} or {REMOTE}")
    return Route(url, identity, cls)


class HandRoute(NetworkServiceElement):
    """See the module docstring."""

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        values = next.ctx.values
        url = values.get(CLIENT_URL)
        if not url:
            raise FailedPrecondition("no endpoint route was chosen: place HandRoute behind "
                                     "RouteToEndpoint")
        route = Route(url, values.get(NEXT_HOP_ID, ""), values.get(MECHANISM_CLASS, REMOTE))
        values[SEND_HEADERS] = route.headers()
        values[ROUTE_CLAIM] = route.binding()
        return await next.request(request)


class FollowRoute(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, nsmgr_id: Callable[[], str]) -> None:
        self.nsmgr_id = nsmgr_id

    def _route(self, next: NSCursor) -> Route | None:
        ctx = next.ctx
        route = route_from(ctx.headers)
        signers = ctx.values.get(PATH_IDS)
        if route is None or signers is None:
            return route
        own = self.nsmgr_id()
        if not own or not signers or signers[-1] != own:
            raise audit.denied(
                "route",
                f"the route comes from {signers[-1] if signers else 'nobody'}, not from this "
                f"forwarder's nsmgr ({own or 'not registered yet'}): send requests to the nsmgr",
                peer=ctx.peer,
            )
        if ctx.values.get(SIGNED_ROUTE, "") != route.binding():
            raise audit.denied(
                "route",
                "the route in the call's headers is not the one the nsmgr signed for this "
                "segment (its token's nxt claim): a forwarder goes only where its nsmgr chose",
                peer=ctx.peer,
            )
        return route

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        route = self._route(next)
        if route is None:
            raise FailedPrecondition(
                "the request carries no route: a forwarder takes requests from its nsmgr only "
                "(send the request to the nsmgr's socket)"
            )
        values = next.ctx.values
        values[CLIENT_URL] = route.url
        values[NEXT_HOP_ID] = route.spiffe_id
        values[MECHANISM_CLASS] = route.mechanism_class
        return await next.request(request)

    async def close(self, conn: Connection, next: NSCursor) -> None:
        route = self._route(next)
        if route is not None:
            next.ctx.values[CLIENT_URL] = route.url
        await next.close(conn)
