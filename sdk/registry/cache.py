"""Registry element ``FindCache``: answers repeated finds from records kept fresh by a watch.

Contract: a non-watching find (``watch`` false, no ``resume``) is keyed by its template. The
first find of a key passes through as before and starts one watching find of the same template
behind this element (its own context: no deadline). The watch's events keep the key's records:
a registration stores or replaces the record under its name, a ``deleted`` event removes it. The
key answers later finds from those records (copies, in the order first seen) once it is *ready*:
every record the last find passed through for it returned (the whole answer: a template with a
name has at most one) has since been seen on the watch (listed, changed or deleted), so a
half-delivered listing is never served. Until then finds pass through.

Never stale by more than the watch: a record whose ``deleted`` event arrived is never returned
after it. When the watch ends or fails for any reason (registry restart, replica gone, backlog
cut) the key is forgotten at once, and so is every key after ``max_age`` seconds (a watch that
silently stalled cannot keep serving), and the least recently used key beyond ``max_keys`` (its
watch is cancelled); the next find of a forgotten key passes through and starts a new watch.
A record re-registered so that it no longer matches (an endpoint that dropped the service)
reaches the key as a deletion, as the registry's watch announces it (:mod:`sdk.registry.watch`).
Watching finds pass through untouched; register and unregister pass through and forget every
key of this element (this process reads its own writes).

Place it behind elements that route by name (``ToGateway``: other domains' names are not cached)
and in front of the remote registry. :meth:`close` cancels every watch (call it on shutdown).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

import structlog

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.aio import cancel_all
from sdk.chain import CallContext
from sdk.registry.core import Event, Query, RegistryCursor, RegistryElement
from sdk.registry.kinds import RecordKind

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)

log = structlog.get_logger()

DEFAULT_MAX_KEYS = 256
DEFAULT_MAX_AGE = 60.0


class _Entry(Generic[M]):
    """One key: its watch, the records it delivered and the names it has seen."""

    def __init__(self, created: float) -> None:
        self.created = created
        self.records: dict[str, M] = {}
        self.seen: set[str] = set()
        #: the names the last find passed through returned (None: none finished yet)
        self.expected: set[str] | None = None
        self.ready = False
        self.task: asyncio.Task[None] | None = None

    def apply(self, name: str, event: Event[M]) -> None:
        self.seen.add(name)
        if event.deleted:
            self.records.pop(name, None)
        else:
            self.records[name] = event.record
        self._check()

    def passed(self, names: set[str]) -> None:
        """A find passed through for this key returned ``names``."""
        self.expected = names
        self._check()

    def drop(self) -> None:
        """Serve nothing more (the key was forgotten or its watch ended)."""
        self.ready = False
        self.records.clear()

    def _check(self) -> None:
        if not self.ready and self.expected is not None and self.seen >= self.expected:
            self.ready = True
            self.expected = None


class FindCache(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(
        self,
        kind: RecordKind[M],
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kind: RecordKind[M] = kind
        self.max_keys = max_keys
        self.max_age = max_age
        self.clock = clock
        self._entries: OrderedDict[bytes, _Entry[M]] = OrderedDict()

    def keys(self) -> int:
        """How many keys are kept (each with one watch)."""
        return len(self._entries)

    async def find(self, query: Query[M], next: RegistryCursor[M]) -> AsyncIterator[Event[M]]:
        if query.watch or query.resume:
            async for event in next.find(query):
                yield event
            return
        key = query.template.SerializeToString(deterministic=True)
        entry = self._entry(key, query.template, next)
        if entry.ready:
            for record in list(entry.records.values()):
                yield Event(self.kind.copy(record))
            return
        # A named template matches one record at most: its first event is the whole answer
        # (readers such as first_record stop reading there).
        named = bool(self.kind.name_of(query.template))
        names: set[str] = set()
        async for event in next.find(query):
            names.add(self.kind.name_of(event.record))
            if named and self._entries.get(key) is entry:
                entry.passed(names)
            yield event
        if self._entries.get(key) is entry:
            entry.passed(names)

    def _entry(self, key: bytes, template: M, next: RegistryCursor[M]) -> _Entry[M]:
        """The live entry of ``key``, a new one (its watch started) when there is none."""
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None and now - entry.created < self.max_age:
            self._entries.move_to_end(key)
            return entry
        if entry is not None:
            self._forget(key)
        entry = self._entries[key] = _Entry(now)
        watcher = next.with_context(CallContext())
        entry.task = asyncio.get_running_loop().create_task(self._follow(key, entry, template,
                                                                         watcher))
        for oldest in list(self._entries)[: max(0, len(self._entries) - self.max_keys)]:
            self._forget(oldest)
        return entry

    async def _follow(self, key: bytes, entry: _Entry[M], template: M,
                      next: RegistryCursor[M]) -> None:
        """Feed ``entry`` from a watch until it ends; then forget the key."""
        try:
            async for event in next.find(Query(template, watch=True)):
                entry.apply(self.kind.name_of(event.record), event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any end of the stream forgets the key
            log.debug("registry find cache: watch ended", kind=self.kind.key, error=str(exc))
        finally:
            entry.drop()
            if self._entries.get(key) is entry:
                del self._entries[key]

    def _forget(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        entry.drop()
        if entry.task is not None:
            entry.task.cancel()

    def forget_all(self) -> None:
        """Forget every key (their watches are cancelled)."""
        for key in list(self._entries):
            self._forget(key)

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        try:
            return await next.register(record)
        finally:
            self.forget_all()

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        try:
            await next.unregister(record)
        finally:
            self.forget_all()

    async def close(self) -> None:
        """Cancel every watch and wait for them to end."""
        tasks = [entry.task for entry in self._entries.values() if entry.task is not None]
        self.forget_all()
        await cancel_all(tasks)
