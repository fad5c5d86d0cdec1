"""The registry's storage interface: a small key-value contract every backend implements.

Records are stored as opaque bytes (serialised protobuf) under ``(kind, name)`` with an optional
expiry instant, so a backend knows nothing about NSM messages. Backends: ``memory://`` and
``sqlite:///path.db`` and ``etcd://host:port[,host:port...]`` (``registry/store/``); Kubernetes
CRDs can be added by implementing :class:`Store` and registering a URL scheme in
:func:`registry.store.open_store`.

A store several registry replicas share (etcd) is a :class:`SharedStore`: besides the
:class:`Store` calls it numbers every change with a revision (increasing, store-wide), says the
revision of each write, and streams the changes after a revision, whoever made them. A replica
follows that stream (:mod:`sdk.registry.follow`) instead of trusting its own writes alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sdk.errors import Unavailable


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


@dataclass(frozen=True)
class Change:
    """One change of a shared store: ``record`` stored under ``(kind, name)`` at ``revision``,
    or None when the record was removed (unregistered, or expired by the store itself)."""

    revision: int
    kind: str
    name: str
    record: StoredRecord | None


class HistoryLost(Exception):
    """A shared store no longer holds the changes asked for (compacted): load a new snapshot."""


class StaleWrite(Unavailable):
    """A conditional write found the record changed since the writer read it (on a shared
    store, by another replica): nothing was written; try again."""


@runtime_checkable
class SharedStore(Store, Protocol):
    """A :class:`Store` shared by several registry replicas (see the module docstring).

    Contract: ``put_at``/``delete_at`` are ``put``/``delete`` that return the revision of the
    write (``delete_at``: None when nothing was stored); given ``expected`` they write only if
    the record was last changed at that revision (0: it does not exist) and raise
    :class:`StaleWrite` otherwise, writing nothing. ``snapshot`` returns the records of every kind
    not expired at ``now``, each as a change at the revision it was last written, and the
    revision they are all current at; ``changes(after)`` yields
    every change with a revision above ``after``, in revision order, without end, reconnecting by
    itself when the store is briefly unreachable, and raises :class:`HistoryLost` when the store
    has discarded changes it would have to yield.
    """

    async def put_at(self, record: StoredRecord, expected: int | None = None) -> int: ...

    async def delete_at(self, kind: str, name: str, expected: int | None = None) -> int | None: ...

    async def snapshot(self, now: float) -> tuple[int, list[Change]]: ...

    def changes(self, after: int) -> AsyncIterator[Change]: ...
