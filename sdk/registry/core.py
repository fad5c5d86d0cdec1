"""The registry chain: elements with ``register``, ``find`` and ``unregister``.

One chain shape serves both record kinds of NSM's registry (NetworkService and
NetworkServiceEndpoint): elements are generic over the record type ``R``. ``find`` takes a
:class:`Query` (a template record plus ``watch``) and yields :class:`Event` values (a record and
whether it was deleted); the gRPC edge converts them to and from NSM's query/response messages.

An element subclasses :class:`RegistryElement` and overrides what it needs; the defaults pass the
call on. The tail stores nothing: register returns the record, find yields nothing, unregister
does nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from sdk.chain import CallContext, Cursor

R = TypeVar("R")


@dataclass(frozen=True)
class Query(Generic[R]):
    """Find records matching ``template`` (empty fields match anything); ``watch`` keeps the
    stream open after the current records and sends every later change. ``resume`` > 0 (with
    ``watch``) skips the current records and sends the changes after that store revision."""

    template: R
    watch: bool = False
    resume: int = 0


@dataclass(frozen=True)
class Event(Generic[R]):
    """One record in a find stream; ``deleted`` marks an unregistration or expiry. ``revision``
    > 0 is the store revision a reader has seen once it has this event (shared stores only).
    ``previous`` (registrations inside the registry only, never sent): the record this one
    replaced, so that a watch whose query it matched learns that the name no longer does."""

    record: R
    deleted: bool = False
    revision: int = 0
    previous: R | None = None


class RegistryCursor(Cursor["RegistryElement[R]"], Generic[R]):
    """The ``next`` handed to a registry element."""

    __slots__ = ()

    def register(self, record: R) -> Awaitable[R]:
        return cast(Awaitable[R], self._call("register", record))

    def find(self, query: Query[R]) -> AsyncIterator[Event[R]]:
        element, following = self._step()
        return element.find(query, following)

    def unregister(self, record: R) -> Awaitable[None]:
        return cast(Awaitable[None], self._call("unregister", record))


class RegistryElement(Generic[R]):
    """Base of registry chain elements: pass-through unless overridden."""

    async def register(self, record: R, next: RegistryCursor[R]) -> R:
        return await next.register(record)

    def find(self, query: Query[R], next: RegistryCursor[R]) -> AsyncIterator[Event[R]]:
        return next.find(query)

    async def unregister(self, record: R, next: RegistryCursor[R]) -> None:
        await next.unregister(record)


class _Tail(RegistryElement[Any]):
    async def register(self, record: Any, next: RegistryCursor[Any]) -> Any:
        return record

    async def find(self, query: Query[Any], next: RegistryCursor[Any]) -> AsyncIterator[Event[Any]]:
        return
        yield

    async def unregister(self, record: Any, next: RegistryCursor[Any]) -> None:
        return None


class RegistryChain(Generic[R]):
    """A composed registry chain for one record kind."""

    def __init__(self, elements: Iterable[RegistryElement[R]], trace: bool = False) -> None:
        self.elements: tuple[RegistryElement[R], ...] = (*elements, _Tail())
        self.trace = trace

    def _cursor(self, ctx: CallContext | None) -> RegistryCursor[R]:
        ctx = ctx or CallContext()
        ctx.trace = ctx.trace or self.trace
        return RegistryCursor(self.elements, 0, ctx)

    async def register(self, record: R, ctx: CallContext | None = None) -> R:
        return await self._cursor(ctx).register(record)

    def find(self, query: Query[R], ctx: CallContext | None = None) -> AsyncIterator[Event[R]]:
        return self._cursor(ctx).find(query)

    async def unregister(self, record: R, ctx: CallContext | None = None) -> None:
        await self._cursor(ctx).unregister(record)


async def first_record(events: AsyncIterator[Event[R]]) -> R | None:
    """The record of the first event (None when there is none), closing the stream at once: a
    stream left open when its reader returns early is finalised later, by a task of its own."""
    try:
        async for event in events:
            return event.record
        return None
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
