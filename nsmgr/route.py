"""Element ``Route``: where nsmgr sends a request next — the heart of the node manager.

Contract, for a request arriving at this nsmgr:

* **from one of this node's forwarders** (the previous path segment is a registered forwarder):
  the endpoint is already chosen — by this nsmgr: the request must continue a connection this
  nsmgr handed to that forwarder, for the same endpoint and service
  (:class:`nsmgr.handovers.Handovers`), else it is refused. If the endpoint registered here,
  the request goes to its own URL with only LOCAL mechanism preferences; otherwise to the URL
  the registry has for it (the remote node's nsmgr) with only REMOTE preferences.
* **from a client or a remote nsmgr**: the client's own nsmgr (this hop is the first or second
  segment of the path) chooses the endpoint (:class:`nsmgr.discover.EndpointChooser`) — on a
  refresh it tries the one the connection has first; an endpoint the client named itself must
  be registered for the requested service — then a forwarder of this node;
  the request goes to that forwarder. A refresh keeps the endpoint and forwarder it had, unless
  one of them died or the client asked for ``RESELECT_REQUESTED``; then the old path is closed
  (best effort) and a new one built, excluding what failed (a reselected endpoint is excluded
  for that request only, not reported to the shared circuit breaker). The new path gets fresh
  ids after this hop, except when the old one could not be closed (its forwarder is gone) and
  the endpoint stays the same: then the hops that still hold the connection get the same ids
  and update it in place rather than keep an orphan until it expires.
* A failed attempt is recorded against the endpoint (circuit breaker) and, when this nsmgr chose
  the endpoint, retried with another one (not when the request itself was at fault: invalid, not
  permitted, or clashing with the client's namespace), with bounded exponential back-off, within
  the deadline; when no endpoint is left to try, the last attempt's error is raised. A
  connection moved to another endpoint starts from fresh addresses and fresh ids after this hop.

The choice is kept in the connection's metadata so close follows the same path; nothing is kept
for a request that failed. With every choice of the next hop, its SPIFFE ID (as it registered:
a forwarder's or local endpoint's own entry in ``path_ids``, a remote endpoint's last one — the
nsmgr that proxied it) goes into ``ctx.values[NEXT_HOP_ID]`` for ``SignPathSegment``. Place it
last before ``SignPathSegment``/``Connect``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from api.mechanisms import LOCAL, REMOTE, of_class
from api.proto.connection_pb2 import DOWN, RESELECT_REQUESTED, UP, Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from api.proto.registry_pb2 import NetworkServiceEndpoint
from nsmgr.discover import EndpointChooser
from nsmgr.endpoints import LocalEndpoints
from nsmgr.forwarders import LocalForwarders
from nsmgr.handovers import Handover, Handovers
from sdk.errors import (
    AlreadyExists,
    FabricError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from sdk.networkservice.client import CLIENT_URL
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.token import NEXT_HOP_ID, PATH_IDS
from sdk.registry.core import Query, RegistryChain
from sdk.registry.pathids import last_id
from sdk.select.backoff import delays

_log = structlog.get_logger("nsmgr.route")

# Errors another endpoint would not cure: the request is invalid or not permitted, or it clashes
# with what already exists in the client's own namespace.
CLIENT_FAULTS = (InvalidArgument, PermissionDenied, Unauthenticated, AlreadyExists)

ENDPOINT = "endpoint"
FORWARDER = "forwarder"
TARGET = "target"


def previous_hop(conn: Connection) -> str:
    """Name of the segment before this hop's, or '' at the first hop."""
    index = conn.path.index
    return conn.path.path_segments[index - 1].name if index > 0 else ""


def forget_addresses(conn: Connection) -> None:
    """Drop the addresses and routes another endpoint assigned (keep the client's constraints)."""
    ip = conn.context.ip_context
    for field in ("src_ip_addrs", "dst_ip_addrs", "src_routes", "dst_routes"):
        ip.ClearField(field)  # type: ignore[arg-type]


def truncate_after_self(conn: Connection) -> None:
    """Drop the segments after this hop's, so the next hops get fresh ids."""
    del conn.path.path_segments[conn.path.index + 1 :]


class Route(NetworkServiceElement):
    """See the module docstring."""

    def __init__(
        self,
        chooser: EndpointChooser,
        endpoints_registry: RegistryChain[NetworkServiceEndpoint],
        local_endpoints: LocalEndpoints,
        forwarders: LocalForwarders,
        attempts: int = 3,
    ) -> None:
        self.chooser = chooser
        self.endpoints_registry = endpoints_registry
        self.local_endpoints = local_endpoints
        self.forwarders = forwarders
        self.attempts = attempts
        self.load: dict[str, int] = {}
        self.handovers = Handovers()
        self.on_remote: Callable[[str], None] | None = None  # told of every remote nsmgr used

    async def _registered(self, name: str) -> NetworkServiceEndpoint:
        async for event in self.endpoints_registry.find(
            Query(NetworkServiceEndpoint(name=name))
        ):
            return event.record
        raise NotFound(f"network service endpoint {name!r} is not registered (any more)")

    async def _outbound(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = request.connection
        signers = next.ctx.values.get(PATH_IDS)
        forwarder = previous_hop(conn)
        self.handovers.check(
            conn, signers[-1] if isinstance(signers, list) and signers else "",
            self.forwarders.spiffe_id(forwarder),
        )
        name = conn.network_service_endpoint_name
        local_url = self.local_endpoints.url(name)
        if local_url:
            target, identity = local_url, self.local_endpoints.spiffe_id(name)
        else:
            record = await self._registered(name)
            target, identity = record.url, last_id(record)
        wanted = LOCAL if local_url else REMOTE
        kept = of_class(list(request.mechanism_preferences), wanted)
        if not kept:
            raise InvalidArgument(
                "mechanism_preferences",
                f"the endpoint is {'local' if local_url else 'remote'} but no {wanted} "
                "mechanism was offered",
            )
        del request.mechanism_preferences[:]
        request.mechanism_preferences.extend(kept)
        next.ctx.metadata[TARGET] = target
        next.ctx.values[CLIENT_URL] = target
        next.ctx.values[NEXT_HOP_ID] = identity
        reply = await next.request(request)
        if not local_url and self.on_remote is not None:
            self.on_remote(target)
        return reply

    async def _check_named(self, conn: Connection) -> None:
        """An endpoint the client named itself must provide the service it asks for (else the
        authorization of that service would admit it to another)."""
        name, service = conn.network_service_endpoint_name, conn.network_service
        record = await self._registered(name)
        if service not in record.network_service_names:
            provided = ", ".join(record.network_service_names) or "nothing"
            raise InvalidArgument(
                "connection.network_service_endpoint_name",
                f"endpoint {name!r} does not provide network service {service!r} (it provides "
                f"{provided}): name an endpoint of that service, or leave the field empty for "
                "nsmgr to choose one",
            )

    def _usable(self, metadata: dict[str, object], conn: Connection) -> bool:
        forwarder = metadata.get(FORWARDER)
        return (
            conn.state not in (RESELECT_REQUESTED, DOWN)
            and isinstance(forwarder, str)
            and self.forwarders.url(forwarder) is not None
        )

    async def _close_old_path(self, conn: Connection, next: NSCursor) -> bool:
        """Close what was built downstream; False when that was not possible."""
        if len(conn.path.path_segments) <= conn.path.index + 1:
            return True  # nothing was built downstream
        target = next.ctx.metadata.get(TARGET)
        if not isinstance(target, str):
            # Built by an earlier request of this nsmgr whose way is forgotten (its forwarder
            # died): not closed. Never built by this nsmgr: nothing of ours to close.
            return ENDPOINT not in next.ctx.metadata
        old = Connection()
        old.CopyFrom(conn)
        next.ctx.values[CLIENT_URL] = target
        try:
            await next.close(old)
        except FabricError as exc:
            _log.info("closing the old path failed (it may be gone); the next hops keep their "
                      "ids to update it in place", error=str(exc))
            return False
        return True

    async def _inbound(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = request.connection
        md = next.ctx.metadata
        chose = conn.path.index <= 1  # this nsmgr serves the client: it owns the choice
        previous = conn.network_service_endpoint_name
        excluded: set[str] = set()
        if conn.state == RESELECT_REQUESTED and chose and conn.network_service_endpoint_name:
            # Another endpoint for this connection only: one client's word is no evidence
            # against the endpoint (the breaker counts failures this nsmgr saw itself).
            excluded.add(conn.network_service_endpoint_name)
            conn.network_service_endpoint_name = ""
        named = conn.network_service_endpoint_name
        if chose and named and md.get(ENDPOINT) != named:
            await self._check_named(conn)
        if md and not self._usable(md, conn):
            await self._rebuild(conn, next)
        if not chose and not conn.network_service_endpoint_name:
            raise InvalidArgument(
                "connection.network_service_endpoint_name",
                "a request from another node must name the endpoint chosen for it",
            )
        pauses = list(delays(self.attempts, 0.05, 0.5))
        failure: FabricError | None = None
        for attempt in range(self.attempts):
            if chose and not conn.network_service_endpoint_name:
                try:
                    endpoint = await self._choose(conn, excluded)
                except NotFound:
                    if failure is None:
                        raise
                    raise failure from None  # why the endpoints we tried failed says more
                conn.network_service_endpoint_name = endpoint.name
                if endpoint.name != previous:
                    forget_addresses(conn)  # the new endpoint's IPAM assigns its own
                if md.get(ENDPOINT) not in (None, endpoint.name):
                    truncate_after_self(conn)  # the hops towards another endpoint are new
            forwarder = md.get(FORWARDER)
            url = self.forwarders.url(forwarder) if isinstance(forwarder, str) else None
            if url is None:
                forwarder, url = self.forwarders.pick()
            next.ctx.values[CLIENT_URL] = url
            next.ctx.values[NEXT_HOP_ID] = self.forwarders.spiffe_id(str(forwarder))
            conn.state = UP
            undo = self.handovers.hand(conn.id, Handover(  # conn.id: this hop's segment id
                str(forwarder), conn.network_service_endpoint_name, conn.network_service))
            try:
                reply = await next.request(request)
            except BaseException as exc:
                undo()
                if not isinstance(exc, FabricError):
                    raise
                if not chose or isinstance(exc, CLIENT_FAULTS):
                    raise  # another endpoint would not help; nor is this one to blame
                failure = exc
                failed = conn.network_service_endpoint_name
                self.chooser.breaker.record_failure(failed)
                excluded.add(failed)
                _log.warning("request failed, choosing another endpoint", endpoint=failed,
                             attempt=attempt + 1, error=str(exc))
                await self._rebuild(conn, next)
                conn.network_service_endpoint_name = ""
                remaining = next.ctx.remaining()
                pause = pauses[attempt]
                if attempt + 1 == self.attempts or (remaining is not None and remaining < pause):
                    raise
                await asyncio.sleep(pause)  # back-off before the next attempt, not a sync wait
                continue
            if chose:
                self.chooser.breaker.record_success(reply.network_service_endpoint_name)
            self._count(md.get(ENDPOINT), reply.network_service_endpoint_name)
            md.update({
                ENDPOINT: reply.network_service_endpoint_name,
                FORWARDER: forwarder,
                TARGET: url,
            })
            return reply
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _count(self, old: object, new: str) -> None:
        """Keep the per-endpoint connection counts (least-connections) up to date."""
        if old == new:
            return
        if isinstance(old, str):
            self.load[old] = max(0, self.load.get(old, 1) - 1)
        self.load[new] = self.load.get(new, 0) + 1

    async def _rebuild(self, conn: Connection, next: NSCursor) -> None:
        """Close what this connection had downstream (best effort) and forget the forwarder;
        when the close went through, forget the path after this hop too, so the next attempt
        builds a fresh one with new ids."""
        closed = await self._close_old_path(conn, next)
        next.ctx.metadata.pop(TARGET, None)
        next.ctx.metadata.pop(FORWARDER, None)
        if closed:
            truncate_after_self(conn)

    async def _choose(self, conn: Connection, excluded: set[str]) -> NetworkServiceEndpoint:
        """An endpoint other than the excluded ones when there is one; otherwise (the failure
        may not have been the endpoint's) any available one again."""
        try:
            return await self.chooser.choose(conn.network_service, dict(conn.labels), excluded)
        except NotFound:
            if not excluded:
                raise
            return await self.chooser.choose(conn.network_service, dict(conn.labels), set())

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        if previous_hop(request.connection) in self.forwarders.names():
            return await self._outbound(request, next)
        return await self._inbound(request, next)

    async def close(self, conn: Connection, next: NSCursor) -> None:
        self.handovers.drop(conn.id)
        md = next.ctx.metadata
        target = md.get(TARGET)
        endpoint = md.get(ENDPOINT)
        if isinstance(endpoint, str):
            self.load[endpoint] = max(0, self.load.get(endpoint, 1) - 1)
        if not isinstance(target, str):
            return  # never routed (or already closed): nothing downstream to close
        next.ctx.values[CLIENT_URL] = target
        await next.close(conn)
