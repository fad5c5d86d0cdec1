"""Registry element ``Watch``: fans changes out to every ``find`` with ``watch=true``.

Contract: a watching find first yields the current matching records (from the elements behind
it), then every later change that matches the template: registrations as they were stored, and
unregistrations/expiries with ``deleted=True``. A registration that makes a record stop
matching (e.g. an endpoint re-registered without the service watched) reaches the watchers it
matched before as a deletion of the record it replaced: a watcher never keeps a record that no
longer matches its query. It subscribes before listing, so no change made
meanwhile is lost (a record may then appear twice, never zero times). A watcher that falls more
than ``max_backlog`` events, or more than ``max_backlog_bytes`` bytes of records, behind is cut:
its queued events are dropped at once (their memory is freed) and its stream ends with
:class:`sdk.errors.ResourceExhausted` naming the limit, rather than slowing the registry or
growing without bound; the client may Find again. Events are shared between watchers and each
watcher's queue is a run of the latest events, so the memory all backlogs hold together is at
most ``max_backlog_bytes`` (plus per-event overhead). ``queued_bytes`` tells how much is queued
now. :meth:`Watch.end_all` ends every stream cleanly on shutdown.
Non-watching finds pass through. Place it in front of ``Persist``.

Replicas on a shared store (``publish_local=False``): changes reach watchers only from the
store's change stream (:mod:`sdk.registry.follow` calls :meth:`Watch.publish`), never from this
replica's own calls, so every replica announces every change once, in the store's revision
order, each event carrying its revision. A listing is a snapshot at one revision (see
``Persist``); queued changes up to that revision are then dropped, so nothing is sent twice.
The last ``history`` published events, at most ``max_backlog_bytes`` of records, are kept (a
registrant re-registering big records cannot make it hold more): a watching find with
``resume`` = R (a revision the client saw, e.g. on another replica that died) skips the listing
and gets exactly the changes after R, first from that history, then live; an R older than the
history (:attr:`Watch.floor`) raises :class:`sdk.errors.FailedPrecondition` (Find again without
it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.errors import FailedPrecondition, ResourceExhausted
from sdk.metrics import REGISTRY_WATCHERS
from sdk.registry.core import Event, Query, RegistryCursor, RegistryElement
from sdk.registry.kinds import RecordKind
from sdk.registry.persist import LISTED_AT, REPLACED, UNREGISTERED

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)

_OVERFLOW = object()
_END = object()

DEFAULT_BACKLOG = 10_000
DEFAULT_BACKLOG_BYTES = 32 * 1024 * 1024
DEFAULT_HISTORY = 10_000


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
        publish_local: bool = True,
        history: int = DEFAULT_HISTORY,
    ) -> None:
        self.kind: RecordKind[M] = kind
        self.max_backlog = max_backlog
        self.max_backlog_bytes = max_backlog_bytes
        self.publish_local = publish_local
        self._watchers: set[_Watcher[M]] = set()
        self._history: deque[tuple[Event[M], int]] = deque()
        self._history_bytes = 0
        self.history = history
        #: The oldest revision a resume may name: history holds every change after it.
        self.floor = 0
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
        size = event.record.ByteSize() + (event.previous.ByteSize() if event.previous else 0)
        if event.revision:
            self._remember(event, size)
        for watcher in list(self._watchers):
            if (watcher.queue.qsize() >= self.max_backlog
                    or watcher.queued_bytes + size > self.max_backlog_bytes):
                self._cut(watcher)
            else:
                watcher.queued_bytes += size
                watcher.queue.put_nowait((event, size))

    @property
    def kept(self) -> tuple[int, int]:
        """How many events, and bytes of records, the resume history holds now."""
        return len(self._history), self._history_bytes

    def _remember(self, event: Event[M], size: int) -> None:
        self._history.append((event, size))
        self._history_bytes += size
        while self._history and (len(self._history) > self.history
                                 or self._history_bytes > self.max_backlog_bytes):
            oldest, oldest_size = self._history.popleft()
            self._history_bytes -= oldest_size
            self.floor = oldest.revision

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
        replaced = next.ctx.values.pop(REPLACED, None)
        if self.publish_local:
            self.publish(Event(self.kind.copy(stored), previous=replaced))
        return stored

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        await next.unregister(record)
        removed = next.ctx.values.pop(UNREGISTERED)
        if self.publish_local:
            self.publish(Event(removed if removed is not None else self.kind.copy(record), True))

    def _replay(self, resume: int) -> list[Event[M]]:
        if self.publish_local:
            raise FailedPrecondition(
                f"cannot resume the watch of {self.kind.title}s after revision {resume}: this "
                "registry's store does not number its changes (only shared stores such as "
                "etcd do); Find again without resume_revision"
            )
        if resume < self.floor:
            raise FailedPrecondition(
                f"cannot resume the watch of {self.kind.title}s after revision {resume}: this "
                f"registry replica keeps the changes after revision {self.floor} only; Find "
                "again without resume_revision"
            )
        return [event for event, _ in self._history if event.revision > resume]

    async def find(self, query: Query[M], next: RegistryCursor[M]) -> AsyncIterator[Event[M]]:
        if not query.watch:
            async for event in next.find(query):
                yield event
            return
        watcher: _Watcher[M] = _Watcher()
        self._watchers.add(watcher)
        try:
            seen = query.resume
            if seen:
                for event in self._replay(seen):  # history up to now; the queue holds the rest
                    if (shown := self._as_seen(query, event)) is not None:
                        yield shown
            else:
                async for event in next.find(query):
                    yield event
                seen = next.ctx.values.get(LISTED_AT, 0)
            async for event in self._live(watcher, query):
                if event.revision == 0 or event.revision > seen:
                    yield event
        finally:
            self._watchers.discard(watcher)

    async def _live(self, watcher: _Watcher[M], query: Query[M]) -> AsyncIterator[Event[M]]:
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
            if (shown := self._as_seen(query, event)) is not None:
                yield shown

    def _as_seen(self, query: Query[M], event: Event[M]) -> Event[M] | None:
        """What a watcher of ``query`` gets of ``event``: the event when it matches, a deletion
        of the replaced record when only that one matched, else nothing."""
        if self.kind.matches(query.template, event.record):
            return event
        previous = event.previous
        if event.deleted or previous is None or not self.kind.matches(query.template, previous):
            return None
        return Event(previous, True, event.revision)
