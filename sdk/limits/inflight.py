"""Limits at the gRPC edge: message size and calls in flight per peer.

Contract:

* :class:`InFlightLimit` is a ``grpc.aio`` server interceptor bounding the calls one peer has in
  flight. The peer is the caller's SPIFFE ID when the call came over mTLS, else gRPC's transport
  address (``ipv4:1.2.3.4:5678`` — one TCP connection; ``unix:`` — *every* Unix-socket caller
  shares this one budget, as gRPC Python cannot tell them apart). Unary-unary calls use one
  budget (``max_per_peer``); streaming calls (registry watches, connection monitors, health
  watches, reflection) use a separate one (``max_streams_per_peer``) held while the stream is
  open, so long-lived streams never eat the unary budget. A call over the budget is aborted with
  RESOURCE_EXHAUSTED before the servicer runs, its message naming the limit and how many calls
  are in flight, and counted in ``vwire_limit_refused_total{kind="unary"|"streams"}``. A slot is
  released however the call ends (success, error, cancellation), and a
  peer with nothing in flight has no entry left (:meth:`InFlightLimit.in_flight` is empty when
  idle). Synchronous handlers are passed through unbounded (the fabric's are all async).
  Unary calls are also reported to a :class:`sdk.heaptrim.HeapTrim`, when given one, which gives
  the heap's free pages back once they have stopped.
* :func:`new_server` builds the ``grpc.aio.Server`` every process uses: receive size capped at
  :data:`MAX_MESSAGE` (gRPC answers a bigger message with RESOURCE_EXHAUSTED and keeps serving)
  and an :class:`InFlightLimit` first among the interceptors, reporting to the process's
  :data:`sdk.heaptrim.PROCESS`.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
import structlog
from prometheus_client.metrics import Counter

from sdk.errors import InvalidArgument
from sdk.heaptrim import PROCESS, HeapTrim
from sdk.security.peer import peer_spiffe_id
from sdk.wrapping import Behaviour, WrappingInterceptor

_log = structlog.get_logger("sdk.limits")

REFUSED = Counter(
    "vwire_limit_refused", "Calls refused because their peer had too many in flight", ["kind"]
)

#: Largest message a server accepts, in bytes (gRPC's own default is 4 MiB).
MAX_MESSAGE = 1024 * 1024
#: Unary calls one peer may have in flight at once.
MAX_IN_FLIGHT_PER_PEER = 256
#: Streaming calls (watches, monitors) one peer may have open at once. Generous: every local
#: client keeps a monitor stream per connection open to its nsmgr, and all Unix-socket callers
#: are one peer; a refused monitor stream makes a client heal.
MAX_STREAMS_PER_PEER = 4096


class _Budget:
    """Counts what each peer has in flight; a peer at zero has no entry."""

    def __init__(self, kind: str, limit: int, heap: HeapTrim | None = None) -> None:
        if limit < 1:
            raise InvalidArgument(f"max_{kind}_per_peer", f"must be at least 1 (got {limit})")
        self.kind = kind
        self.limit = limit
        self.counts: dict[str, int] = {}
        self._warned: set[str] = set()
        self._heap = heap

    def acquire(self, peer: str) -> str | None:
        """Take a slot for ``peer``; None on success, else the refusal message."""
        held = self.counts.get(peer, 0)
        if held < self.limit:
            self.counts[peer] = held + 1
            if self._heap is not None:
                self._heap.begin()
            return None
        REFUSED.labels(kind=self.kind).inc()
        if peer not in self._warned:  # one log line per saturation, not one per refusal
            self._warned.add(peer)
            _log.warning("peer over its in-flight limit", peer=peer, kind=self.kind,
                         limit=self.limit)
        return (
            f"too many {self.kind} calls in flight from this peer: {held} in flight, "
            f"the limit is {self.limit}; wait for some to finish and retry"
        )

    def release(self, peer: str) -> None:
        held = self.counts[peer] - 1
        if held:
            self.counts[peer] = held
        else:
            del self.counts[peer]
            self._warned.discard(peer)
        if self._heap is not None:
            self._heap.end()


def _peer(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    return peer_spiffe_id(context) or context.peer() or ""


def _bounded_coroutine(budget: _Budget, inner: Callable[..., Any]) -> Callable[..., Any]:
    async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        peer = _peer(context)
        refusal = budget.acquire(peer)
        if refusal is not None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        try:
            return await inner(request, context)
        finally:
            budget.release(peer)

    return behavior


def _bounded_generator(budget: _Budget, inner: Callable[..., Any]) -> Callable[..., Any]:
    async def behavior(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        peer = _peer(context)
        refusal = budget.acquire(peer)
        if refusal is not None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        try:
            async for item in inner(request, context):
                yield item
        finally:
            budget.release(peer)

    return behavior


def _bounded(budget: _Budget, inner: Callable[..., Any]) -> Callable[..., Any] | None:
    if inspect.isasyncgenfunction(inner):
        return _bounded_generator(budget, inner)
    if inspect.iscoroutinefunction(inner):
        return _bounded_coroutine(budget, inner)
    return None  # a synchronous handler: runs in gRPC's thread pool, passed through


class InFlightLimit(WrappingInterceptor):
    """See the module docstring."""

    def __init__(
        self,
        max_per_peer: int = MAX_IN_FLIGHT_PER_PEER,
        max_streams_per_peer: int = MAX_STREAMS_PER_PEER,
        heap: HeapTrim | None = None,
    ) -> None:
        super().__init__()
        self.unary = _Budget("unary", max_per_peer, heap)
        self.streams = _Budget("streams", max_streams_per_peer)

    def in_flight(self) -> dict[str, int]:
        """Unary calls in flight by peer (peers with none are absent)."""
        return dict(self.unary.counts)

    def streams_open(self) -> dict[str, int]:
        """Streaming calls open by peer (peers with none are absent)."""
        return dict(self.streams.counts)

    def wrap(self, kind: str, behaviour: Behaviour) -> Behaviour | None:
        return _bounded(self.unary if kind == "unary_unary" else self.streams, behaviour)


def new_server(
    max_in_flight_per_peer: int = MAX_IN_FLIGHT_PER_PEER,
    max_message: int = MAX_MESSAGE,
    max_streams_per_peer: int = MAX_STREAMS_PER_PEER,
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
) -> grpc.aio.Server:
    """A ``grpc.aio`` server with the receive size capped at ``max_message`` bytes and an
    :class:`InFlightLimit` in front of ``interceptors``. Use :func:`limited_server` to also get
    the limiter (gRPC's server object cannot carry it)."""
    return limited_server(
        max_in_flight_per_peer, max_message, max_streams_per_peer, interceptors
    )[0]


def limited_server(
    max_in_flight_per_peer: int = MAX_IN_FLIGHT_PER_PEER,
    max_message: int = MAX_MESSAGE,
    max_streams_per_peer: int = MAX_STREAMS_PER_PEER,
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
) -> tuple[grpc.aio.Server, InFlightLimit]:
    """As :func:`new_server`, also returning the limiter (to read its counters)."""
    if max_message < 1:
        raise InvalidArgument("max_message", f"must be at least 1 byte (got {max_message})")
    limit = InFlightLimit(max_in_flight_per_peer, max_streams_per_peer, heap=PROCESS)
    server = grpc.aio.server(
        interceptors=[limit, *interceptors],
        options=[("grpc.max_receive_message_length", max_message)],
    )
    return server, limit
