"""Registry element ``Watch``: fans changes out to every ``find`` with ``watch=true``.

Contract: a watching find first yields the current matching records (from the elements behind
it), then every later change that matches the template: registrations as they were stored, and
unregistrations/expiries with ``deleted=True``. It subscribes before listing, so no change made
meanwhile is lost (a record may then appear twice, never zero times). A watcher that falls more
than ``max_backlog`` events behind is dropped with :class:`sdk.errors.ResourceExhausted` rather
than slowing the registry; :meth:`Watch.end_all` ends every stream cleanly on shutdown.
Non-watching finds pass through. Place it in front of ``Persist``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.errors import ResourceExhausted
from sdk.registry.core import Event, Query, RegistryCursor, RegistryElement
from sdk.registry.kinds import RecordKind
from sdk.registry.persist import UNREGISTERED

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)

_OVERFLOW = object()
_END = object()


class Watch(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, kind: RecordKind[M], max_backlog: int = 10_000) -> None:
        self.kind: RecordKind[M] = kind
        self.max_backlog = max_backlog
        self._watchers: set[asyncio.Queue[Event[M] | object]] = set()

    @property
    def watchers(self) -> int:
        """How many watching finds are open."""
        return len(self._watchers)

    def publish(self, event: Event[M]) -> None:
        """Hand an event to every watcher (drops watchers that are too far behind)."""
        for queue in list(self._watchers):
            if queue.qsize() >= self.max_backlog:
                self._watchers.discard(queue)
                queue.put_nowait(_OVERFLOW)
            else:
                queue.put_nowait(event)

    def end_all(self) -> None:
        """End every open watch stream normally (used on graceful shutdown)."""
        for queue in self._watchers:
            queue.put_nowait(_END)
        self._watchers.clear()

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        stored = await next.register(record)
        self.publish(Event(self.kind.copy(stored)))
        return stored

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        await next.unregister(record)
        removed = next.ctx.values.pop(UNREGISTERED, None)
        self.publish(Event(removed if removed is not None else self.kind.copy(record), True))

    async def find(self, query: Query[M], next: RegistryCursor[M]) -> AsyncIterator[Event[M]]:
        if not query.watch:
            async for event in next.find(query):
                yield event
            return
        queue: asyncio.Queue[Event[M] | object] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            async for event in next.find(query):
                yield event
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if item is _OVERFLOW:
                    raise ResourceExhausted(
                        f"watch of {self.kind.title}s fell more than {self.max_backlog} events "
                        "behind and was closed: read the stream faster or narrow the query"
                    )
                assert isinstance(item, Event)
                if self.kind.matches(query.template, item.record):
                    yield item
        finally:
            self._watchers.discard(queue)
