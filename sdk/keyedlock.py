"""One asyncio lock per key, held only while someone uses it.

``async with locks(key):`` runs the block exclusively for that key (waiters in arrival order);
different keys run concurrently. A key's lock is dropped when its last user leaves, so the map
never grows with keys that are no longer in use.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class KeyedLock:
    """See the module docstring."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        """Keys in use (held or waited for)."""
        return len(self._locks)

    def held(self, key: Hashable) -> bool:
        """Whether someone holds or waits for ``key``."""
        return key in self._locks

    @asynccontextmanager
    async def __call__(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
