"""Client element ``Replicas``: one registry served by several replicas, with failover.

Contract: a terminal element (place it last, like ``RemoteRegistry``) holding one
:class:`~sdk.registry.client.RemoteRegistry` per replica address. Calls go to the replica that
answered last; a call failing with :class:`~sdk.errors.Unavailable` (the replica is down or
unreachable) moves to the next replica and is sent again, up to ``rounds`` passes over all of
them with a short backoff between passes, then the last Unavailable is raised. Other errors are
the registry's answer and are raised at once. Register is idempotent, so resending it is safe;
an unregister whose first attempt landed answers NotFound on the next replica.

A watching find survives the loss of its replica: the element remembers the highest
``revision`` the reader has been given (registries on a shared store such as etcd number their
events) and, when the stream breaks or ends (a replica ends its watches when it stops), opens
it on the next replica with ``resume`` = that revision, so the reader gets every change after
it exactly once and no state twice. When nothing numbered was read yet (e.g. the stream broke
in the middle of the first listing) or the new replica refuses the revision
(FailedPrecondition: older than its history, or a store that does not number changes), the
find starts over with a full listing, so records may be repeated, never lost. A non-watching
find is resent only if it had yielded nothing. Passes without any event read count against
``rounds``; reading an event resets the count.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import grpc
import structlog

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.errors import FailedPrecondition, InvalidArgument, Unavailable
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Event, Query, RegistryCursor, RegistryElement
from sdk.registry.kinds import RecordKind
from sdk.security.source import SvidSource

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)
T = TypeVar("T")

DEFAULT_ROUNDS = 3
BACKOFF = 0.5  # x passes: 3 passes over one replica span gRPC's first reconnect back-off (1 s)

_log = structlog.get_logger("registry.replicas")


class Replicas(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(
        self,
        kind: RecordKind[M],
        channels: Sequence[grpc.aio.Channel],
        source: SvidSource | None = None,
        rounds: int = DEFAULT_ROUNDS,
    ) -> None:
        if not channels:
            raise InvalidArgument("registry", "give at least one registry address")
        self.kind: RecordKind[M] = kind
        self.remotes: list[RemoteRegistry[M]] = [
            RemoteRegistry(kind, channel, source) for channel in channels
        ]
        self.rounds = max(1, rounds)
        self.current = 0

    def _next_replica(self, failed: int, error: Exception) -> None:
        if self.current == failed:
            self.current = (failed + 1) % len(self.remotes)
        _log.info("registry replica unavailable, using the next", replica=failed,
                  next=self.current, error=str(error))

    async def _pause(self, failures: int) -> None:
        if failures % len(self.remotes) == 0:  # a whole pass failed: back off before the next
            await asyncio.sleep(BACKOFF * failures / len(self.remotes))

    async def _unary(self, call: Callable[[RemoteRegistry[M]], Awaitable[T]]) -> T:
        failures = 0
        while True:
            index = self.current
            try:
                return await call(self.remotes[index])
            except Unavailable as e:
                failures += 1
                if failures >= self.rounds * len(self.remotes):
                    raise
                self._next_replica(index, e)
                await self._pause(failures)

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        return await self._unary(lambda remote: remote.register(record, next))

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        await self._unary(lambda remote: remote.unregister(record, next))

    async def find(self, query: Query[M], next: RegistryCursor[M]) -> AsyncIterator[Event[M]]:
        seen = query.resume
        read = 0
        failures = 0
        while True:
            index = self.current
            attempt = query if not seen else Query(query.template, True, seen)
            try:
                async for event in self.remotes[index].find(attempt, next):
                    failures = 0
                    read += 1
                    seen = max(seen, event.revision)
                    yield event
                if not query.watch:
                    return
                error: Exception = Unavailable("the registry replica ended the watch")
            except Unavailable as e:
                if not query.watch and read:
                    raise  # a partial answer cannot be completed elsewhere
                error = e
            except FailedPrecondition as e:
                if not seen or (seen == query.resume and query.resume):
                    raise
                _log.info("registry replica cannot resume the watch; listing again",
                          revision=seen, error=str(e))
                seen = 0
                continue
            failures += 1
            if failures >= self.rounds * len(self.remotes):
                raise error
            self._next_replica(index, error)
            await self._pause(failures)
