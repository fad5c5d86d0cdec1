"""Chain core shared by the NetworkService and registry APIs.

A chain is a tuple of elements ending in a tail. A call enters the chain through a *cursor*
(:class:`Cursor`): ``cursor.request(x)`` hands ``x`` to the element at the cursor's position
together with a cursor one step further on, which the element calls to continue. An element may
act before and after that call, replace the argument, or not continue at all.

Every call carries one :class:`CallContext` through the whole chain: the deadline, the peer,
per-connection metadata and the values elements hand to each other. Both are :class:`Values`:
maps from typed :class:`Key` objects, each defined by the module of the element that writes it,
so a reader names the writer by importing its key and the type checker knows what it gets.
With ``trace=True`` the cursor logs each element's entry, exit, duration and error at debug
level, so no element needs its own tracing code.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar, overload

import structlog

from sdk.errors import DeadlineExceeded

E = TypeVar("E")
T = TypeVar("T")


class Key(Generic[T]):
    """The typed name of one fact that elements share through :class:`Values`.

    Define a key once, as a module constant next to the element that writes the fact
    (``NEXT_HOP_ID: Key[str] = Key("next_hop_id")``); readers import it from there. Keys compare
    by identity: two keys with the same name are different facts.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Key({self.name!r})"


class Values:
    """A map from :class:`Key` to the key's type: ``values[KEY] = v``, ``values.get(KEY)``."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict[Key[Any], Any] = {}

    def __getitem__(self, key: Key[T]) -> T:
        value: T = self._items[key]
        return value

    def __setitem__(self, key: Key[T], value: T) -> None:
        self._items[key] = value

    def __contains__(self, key: Key[Any]) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k.name}={v!r}" for k, v in self._items.items())
        return f"Values({inner})"

    @overload
    def get(self, key: Key[T]) -> T | None: ...
    @overload
    def get(self, key: Key[T], default: T) -> T: ...
    def get(self, key: Key[T], default: T | None = None) -> T | None:
        value: T | None = self._items.get(key, default)
        return value

    def pop(self, key: Key[T], default: T | None = None) -> T | None:
        """Remove the fact and return it (``default`` when it was not there)."""
        value: T | None = self._items.pop(key, default)
        return value


@dataclass
class CallContext:
    """What travels with one call through a chain.

    ``deadline`` is a ``time.monotonic()`` instant or None; ``peer`` names the caller as the
    transport saw it (a SPIFFE ID once mTLS is on, else the transport address); ``headers`` are
    what the caller sent along that elements read (the trace context); ``metadata`` is the
    per-connection store filled by the metadata element; ``values`` holds what an element hands
    to a later element in the same call.
    """

    deadline: float | None = None
    peer: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    trace: bool = False
    metadata: Values = field(default_factory=Values)
    values: Values = field(default_factory=Values)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None when there is none); raises when it passed."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the request's deadline passed before the fabric finished it")
        return left

    @classmethod
    def with_timeout(cls, seconds: float | None, **kwargs: Any) -> CallContext:
        """A context whose deadline is ``seconds`` from now (None: no deadline)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        return cls(deadline=deadline, **kwargs)


_log = structlog.get_logger("sdk.chain")


class Cursor(Generic[E]):
    """A position in a chain; API-specific subclasses add one method per chain operation."""

    __slots__ = ("_elements", "_index", "ctx")

    def __init__(self, elements: tuple[E, ...], index: int, ctx: CallContext) -> None:
        self._elements = elements
        self._index = index
        self.ctx = ctx

    def through(self, elements: Sequence[E]) -> Self:
        """A cursor that runs ``elements`` first and then continues where this one points (for
        elements that choose among sub-chains, such as a switch)."""
        return type(self)((*elements, *self._elements[self._index:]), 0, self.ctx)

    def with_context(self, ctx: CallContext) -> Self:
        """The same position with another call's context (for elements that call on later,
        outside the call that gave them this cursor)."""
        return type(self)(self._elements, self._index, ctx)

    def _step(self) -> tuple[E, Self]:
        """The element at this position and a cursor at the next one."""
        following: Self = type(self)(self._elements, self._index + 1, self.ctx)
        return self._elements[self._index], following

    def _call(self, method: str, arg: Any) -> Awaitable[Any]:
        """The next element's ``method(arg, following)``, to be awaited by the caller: the
        element's own coroutine, so a pass through the chain makes one coroutine per element
        (with ``trace``, one more that logs around it)."""
        element, following = self._step()
        call: Awaitable[Any] = getattr(element, method)(arg, following)
        if not self.ctx.trace:
            return call
        return _traced(type(element).__name__, method, call)


async def _traced(name: str, method: str, call: Awaitable[Any]) -> Any:
    start = time.perf_counter()
    _log.debug("chain.enter", element=name, op=method)
    try:
        result = await call
    except Exception as exc:
        _log.debug("chain.error", element=name, op=method, error=str(exc))
        raise
    _log.debug("chain.exit", element=name, op=method,
               seconds=round(time.perf_counter() - start, 6))
    return result


def elements_of(*parts: E | Sequence[E]) -> tuple[E, ...]:
    """Flatten elements and nested sequences of elements into one tuple (for chain builders)."""
    flat: list[E] = []
    for part in parts:
        if isinstance(part, Sequence):
            flat.extend(part)
        else:
            flat.append(part)
    return tuple(flat)
