"""Element ``SelectEndpoint``: choose the endpoint of a request among the discovered candidates.

Contract: on a request that names no endpoint, picks one of ``ctx.values[CANDIDATES]`` (set by
``Discover`` in front) with the selection policy (round robin, least-connections or weights:
:mod:`sdk.select.policy`, which skips endpoints the circuit breaker ejected) leaving out those in
``ctx.values[EXCLUDED]``; when every candidate is excluded it picks among all of them again (the
failure may not have been the endpoint's). It names the endpoint in the connection and, unless
it is the one this hop built the connection to before (``metadata[CHOSEN]``), drops the
addresses and routes in the request: another endpoint assigned them, or the client brought them
(the chosen endpoint's IPAM assigns its own). Raises :class:`NoEndpoint` with the policy's
reason when none is available. A request that names an endpoint passes unchanged. Keeps nothing;
close passes through.

Elements that rule an endpoint out for this request add it with :func:`exclude`.
"""

from __future__ import annotations

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext, Key
from sdk.errors import NotFound
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.discover import CANDIDATES, NoEndpoint
from sdk.select.policy import Policy

#: Endpoints not to choose for this request (a reselect, a failed attempt).
EXCLUDED: Key[set[str]] = Key("select.excluded")


def exclude(ctx: CallContext, endpoint: str) -> None:
    """Rule ``endpoint`` out for the rest of this request."""
    excluded = ctx.values.get(EXCLUDED)
    if excluded is None:
        ctx.values[EXCLUDED] = excluded = set()
    excluded.add(endpoint)


def forget_addresses(conn: Connection) -> None:
    """Drop the addresses and routes an endpoint assigned (keep the client's constraints)."""
    ip = conn.context.ip_context
    for field in ("src_ip_addrs", "dst_ip_addrs", "src_routes", "dst_routes"):
        ip.ClearField(field)  # type: ignore[arg-type]


class SelectEndpoint(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = request.connection
        if conn.network_service_endpoint_name:
            return await next.request(request)
        found = next.ctx.values.get(CANDIDATES) or []
        excluded = next.ctx.values.get(EXCLUDED) or set()
        try:
            try:
                chosen = self.policy.pick(conn.network_service, found, excluded)
            except NotFound:
                if not excluded:
                    raise
                chosen = self.policy.pick(conn.network_service, found, set())
        except NotFound as exc:
            raise NoEndpoint(str(exc)) from None
        if next.ctx.metadata.get(CHOSEN) != chosen.name:
            forget_addresses(conn)  # assigned by another endpoint, or brought by the client
        conn.network_service_endpoint_name = chosen.name
        reply = await next.request(request)
        next.ctx.metadata[CHOSEN] = reply.network_service_endpoint_name
        return reply


#: Metadata: the endpoint the connection was last built to by this hop's choice.
CHOSEN: Key[str] = Key("select.chosen")
