"""Registry element ``Watch``: fans changes out to every ``find`` with ``watch=true``.

Contract: a watching find first yields the current matching records (from the elements behind
it), then every later change that matches the template: registrations as they were stored, and
unregistrations/expiries with ``deleted=True``. It subscribes before listing, so no change made
meanwhile is lost (a record may then appear twice, never zero times). A watcher that falls more
than ``max_backlog`` events, or more than ``max_backlog_bytes`` bytes of records, behind is cut:
its queued events are dropped at once (their memory is freed) and its stream ends with
:class:`sdk.errors.ResourceExhausted` naming the limit, rather than slowing the registry or
growing without bound; the client may Find again. Events are shared between watchers and each
watcher's queue is a run of the latest events, so the memory all backlogs hold together is at
most ``max_backlog_bytes`` (plus per-event overhead). ``queued_bytes`` tells how much is queued
now. :meth:`Watch.end_all` ends every stream cleanly on shutdown.
Non-watching finds pass through. Place it in front of ``Persist``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.errors import ResourceExhausted
from sdk.metrics import REGISTRY_WATCHERS
from sdk.registry.core import Event, Query, RegistryCursor, RegistryElement
from sdk.registry.kinds import RecordKind
from sdk.registry.persist import UNREGISTERED

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)

_OVERFLOW = object()
_END = object()

DEFAULT_BACKLOG = 10_000
DEFAULT_BACKLOG_BYTES = 32 * 1024 * 1024


class _Watcher(Generic[M]):
    """One watching find's queue and how many bytes of records it holds."""

    __slots__ = ("queue", "queued_bytes")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Event[M], int] | object] = asyncio.Queue()
        self.queued_bytes = 0


class Watch(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(
        self,
        kind: RecordKind[M],
        max_backlog: int = DEFAULT_BACKLOG,
        max_backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
    ) -> None:
        self.kind: RecordKind[M] = kind
        self.max_backlog = max_backlog
        self.max_backlog_bytes = max_backlog_bytes
        self._watchers: set[_Watcher[M]] = set()
        REGISTRY_WATCHERS.labels(kind.key).set_function(lambda: len(self._watchers))

    @property
    def watchers(self) -> int:
        """How many watching finds are open."""
        return len(self._watchers)

    @property
    def queued_bytes(self) -> int:
        """Bytes of records queued for watchers now (an event shared by n watchers counts n
        times)."""
        return sum(w.queued_bytes for w in self._watchers)

    def publish(self, event: Event[M]) -> None:
        """Hand an event to every watcher (cuts watchers that are too far behind)."""
        size = event.record.ByteSize()
        for watcher in list(self._watchers):
            if (watcher.queue.qsize() >= self.max_backlog
                    or watcher.queued_bytes + size > self.max_backlog_bytes):
                self._cut(watcher)
            else:
                watcher.queued_bytes += size
                watcher.queue.put_nowait((event, size))

    def _cut(self, watcher: _Watcher[M]) -> None:
        self._watchers.discard(watcher)
        while not watcher.queue.empty():  # free the backlog now, not when the stream ends
            watcher.queue.get_nowait()
        watcher.queued_bytes = 0
        watcher.queue.put_nowait(_OVERFLOW)

    def end_all(self) -> None:
        """End every open watch stream normally (used on graceful shutdown)."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(_END)
        self._watchers.clear()

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        stored = await next.register(record)
        self.publish(Event(self.kind.copy(stored)))
        return stored

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        await next.unregister(record)
        removed = next.ctx.values.pop(UNREGISTERED)
        self.publish(Event(removed if removed is not None else self.kind.copy(record), True))

    async def find(self, query: Query[M], next: RegistryCursor[M]) -> AsyncIterator[Event[M]]:
        if not query.watch:
            async for event in next.find(query):
                yield event
            return
        watcher: _Watcher[M] = _Watcher()
        self._watchers.add(watcher)
        try:
            async for event in next.find(query):
                yield event
            while True:
                item = await watcher.queue.get()
                if item is _END:
                    return
                if item is _OVERFLOW:
                    raise ResourceExhausted(
                        f"watch of {self.kind.title}s was closed: it fell more than "
                        f"{self.max_backlog} events or {self.max_backlog_bytes} bytes of records "
                        "behind (the registry's watch backlog limit); read the stream faster, "
                        "narrow the query, or Find again"
                    )
                assert isinstance(item, tuple)
                event, size = item
                watcher.queued_bytes -= size
                if self.kind.matches(query.template, event.record):
                    yield event
        finally:
            self._watchers.discard(watcher)
