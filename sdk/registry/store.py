"""The registry's storage interface: a small key-value contract every backend implements.

Records are stored as opaque bytes (serialised protobuf) under ``(kind, name)`` with an optional
expiry instant, so a backend knows nothing about NSM messages. Backends: ``memory://`` and
``sqlite:///path.db`` (``registry/store/``); etcd and Kubernetes CRDs can be added by implementing
:class:`Store` and registering a URL scheme in :func:`registry.store.open_store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StoredRecord:
    """One record: its kind (``"ns"`` or ``"nse"``), unique name within the kind, serialised
    message, the Unix time it expires at (None: never), and the identity that owns it (None:
    registered in-process, or stored before owners were kept)."""

    kind: str
    name: str
    data: bytes
    expires_at: float | None = None
    owner: str | None = None


class Store(Protocol):
    """Persistent record storage. All methods are safe to call concurrently from one event loop.

    Contract: ``put`` inserts or replaces atomically (the owner with the record); ``delete``
    returns whether a record existed; ``load`` returns every record of a kind that has not
    expired at ``now``; ``purge_expired`` removes the rest (e.g. what expired while the registry
    was down); nothing a ``put`` returned from may be lost by a restart of a persistent backend.
    """

    async def put(self, record: StoredRecord) -> None: ...

    async def delete(self, kind: str, name: str) -> bool: ...

    async def load(self, kind: str, now: float) -> list[StoredRecord]: ...

    async def purge_expired(self, now: float) -> int:
        """Delete records expired at ``now`` (of every kind); returns how many."""
        ...

    async def close(self) -> None: ...
