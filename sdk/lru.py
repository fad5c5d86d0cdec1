"""A bounded map whose least recently used entry is dropped first.

The processes remember what they verified or learnt (path tokens, signer chains, mTLS peers,
services' tunnel MTUs) in maps that must not grow without bound. :class:`Lru` is that map:

- :meth:`Lru.put` stores an entry as the most recently used and drops the least recently used
  ones beyond ``size``;
- :meth:`Lru.get` only reads: a caller that checks what it found first (still valid, same
  bundle) marks a hit it will use with :meth:`Lru.touch`;
- :meth:`Lru.forget` drops one entry (absent: nothing happens).

Not thread-safe: a caller used from several threads holds its own lock around it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """See the module docstring."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def touch(self, key: K) -> None:
        """Make ``key`` (present) the most recently used."""
        self._entries.move_to_end(key)

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
