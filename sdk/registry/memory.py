"""In-memory registry store (``memory://``): a dict per kind, lost when the process exits.

For tests and single-process labs. Every method runs synchronously inside the event loop without
awaiting, so each call is atomic with respect to other tasks. ``load`` returns the records that
have not expired at ``now`` (a record with ``expires_at <= now`` is expired); expired records stay
stored until :meth:`MemoryStore.purge_expired` or a ``put``/``delete`` of the same name removes
them. After :meth:`MemoryStore.close` (idempotent) every other call raises
:class:`~sdk.errors.FailedPrecondition`.
"""

from __future__ import annotations

from sdk.errors import FailedPrecondition
from sdk.registry.store import StoredRecord


def _alive(record: StoredRecord, now: float) -> bool:
    return record.expires_at is None or record.expires_at > now


class MemoryStore:
    """A :class:`~sdk.registry.store.Store` keeping records in dicts keyed by kind, then name."""

    def __init__(self) -> None:
        self._kinds: dict[str, dict[str, StoredRecord]] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition("registry store memory:// is closed")

    async def put(self, record: StoredRecord) -> None:
        """Insert or replace the record stored under ``(record.kind, record.name)``."""
        self._check_open()
        self._kinds.setdefault(record.kind, {})[record.name] = record

    async def delete(self, kind: str, name: str) -> bool:
        """Remove ``(kind, name)``; return whether it was stored (expired or not)."""
        self._check_open()
        return self._kinds.get(kind, {}).pop(name, None) is not None

    async def load(self, kind: str, now: float) -> list[StoredRecord]:
        """Every record of ``kind`` that has not expired at ``now``, ordered by name."""
        self._check_open()
        records = self._kinds.get(kind, {})
        return [records[n] for n in sorted(records) if _alive(records[n], now)]

    async def purge_expired(self, now: float) -> int:
        """Drop every record (of any kind) expired at ``now``; return how many were dropped."""
        self._check_open()
        dropped = 0
        for records in self._kinds.values():
            expired = [name for name, rec in records.items() if not _alive(rec, now)]
            for name in expired:
                del records[name]
            dropped += len(expired)
        return dropped

    async def close(self) -> None:
        """Forget every record; later calls raise FailedPrecondition. Idempotent."""
        self._closed = True
        self._kinds.clear()
