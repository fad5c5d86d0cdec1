"""Registry element ``Persist``: the authoritative record set, cached in memory, written through
to a :class:`sdk.registry.store.Store`.

Contract: ``register`` writes the record to the store and only then to the cache, so a record the
caller saw accepted survives a restart of a persistent store; for expiring kinds it keeps the
first ``initial_registration_time`` across refreshes. ``find`` yields the current records that
match the template (read-only objects: consumers must copy before changing them), using the
name and service-name indexes to avoid scanning. ``unregister`` of an unknown name raises
:class:`sdk.errors.NotFound`; the removed record is left in ``ctx.values["unregistered"]`` for
elements in front (the watch element announces it). Writes of one name are serialised, so the store
and the cache always change together. Call :meth:`load` once before serving. Place it last, in
front of the tail.

Owners: a register carrying ``ctx.values[OWNER]`` (set by :class:`~sdk.registry.ownership.
Ownership`) stores that owner with the record, in the same write; an in-process register keeps
the stored owner. :meth:`owner` answers from what was stored, so ownership survives restarts;
records stored before owners were kept get the last SPIFFE ID of their ``path_ids`` (the
identity the registry saw register them). :meth:`usage` says how many records, and how many
bytes, one owner holds (for ``Quota``).

On a shared store (registry replicas, :mod:`sdk.registry.follow`) the cache follows the store's
change stream instead: :meth:`apply` takes each change (from any replica, or the store's own
expiry); ``register``/``unregister`` write to the store only if the record is still at the
revision this replica's cache holds (else :class:`~sdk.registry.store.StaleWrite`, UNAVAILABLE:
another replica changed it since, so the checks in front, e.g. ownership, ran on stale data;
the caller tries again) and return once this replica's cache has caught up with their write, so
a replica reads its own writes. ``find`` then lists a snapshot:
every record as of one revision, the last event carrying that revision (left in
``ctx.values[LISTED_AT]`` too, for the watch element in front).
A registration that replaced a record leaves the old one in ``ctx.values[REPLACED]`` (and
:meth:`apply`'s events carry it as ``previous``), so the watch element can tell watchers whose
query the old record matched and the new one does not.
"""

from __future__ import annotations

import heapq
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.chain import Key
from sdk.errors import NotFound
from sdk.keyedlock import KeyedLock
from sdk.metrics import REGISTRY_RECORDS
from sdk.registry.core import Event, Query, RegistryCursor, RegistryElement
from sdk.registry.kinds import RecordKind
from sdk.registry.ownership import OWNER
from sdk.registry.store import Change, SharedStore, Store, StoredRecord
from sdk.security.peer import identity_of

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)

#: The record an unregister removed, for the watch element in front to announce.
UNREGISTERED: Key[Any] = Key("persist.unregistered")
#: The record a registration replaced (for the watch element in front).
REPLACED: Key[Any] = Key("persist.replaced")
#: The store revision a find's listing was current at (shared stores only).
LISTED_AT: Key[int] = Key("persist.listed_at")


class Follows(Protocol):
    """What Persist needs of the follower of a shared store (:class:`sdk.registry.follow.
    Follower`)."""

    store: SharedStore
    revision: int

    async def reached(self, revision: int) -> None: ...


def expiry_of(record: NetworkService | NetworkServiceEndpoint) -> float | None:
    """The Unix time a record expires at, or None when it carries no expiration."""
    if isinstance(record, NetworkServiceEndpoint) and record.HasField("expiration_time"):
        return record.expiration_time.ToNanoseconds() / 1e9
    return None


class Persist(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, kind: RecordKind[M], store: Store) -> None:
        self.kind: RecordKind[M] = kind
        self.store = store
        self._records: dict[str, M] = {}
        self._by_service: defaultdict[str, set[str]] = defaultdict(set)
        self._expiries: list[tuple[float, str]] = []
        self._writing = KeyedLock()  # per name: store and cache change together
        self._owners: dict[str, str] = {}
        self._usage: dict[str, tuple[int, int]] = {}  # owner -> (records, bytes)
        self._follower: Follows | None = None
        self._revisions: dict[str, int] = {}  # shared store: the revision each record is at
        #: Called whenever a record with an expiry enters the cache (the expiry sweeper wakes).
        self.on_expiry: Callable[[], None] | None = None
        REGISTRY_RECORDS.labels(kind.key).set_function(lambda: len(self._records))

    async def load(self, now: float | None = None) -> int:
        """Fill the cache from the store with the records not expired at ``now`` (purging the
        expired ones from the store); returns how many were loaded."""
        now = time.time() if now is None else now
        await self.store.purge_expired(now)
        stored = await self.store.load(self.kind.key, now)
        for item in stored:
            record = self.kind.parse(item.data)
            owner = item.owner
            if owner is None and record.path_ids:
                owner = identity_of(record.path_ids[-1])  # stored before owners were kept
            self._remember(record, owner)
        return len(stored)

    def follow(self, follower: Follows) -> None:
        """Let the cache follow a shared store's changes (see the module docstring)."""
        self._follower = follower

    def apply(self, change: Change) -> Event[M] | None:
        """Bring the cache in step with one change of the shared store; the event watchers
        should see (None: a deletion of a record this replica did not hold)."""
        if change.record is None:
            self._revisions.pop(change.name, None)
            old = self._forget(change.name)
            return None if old is None else Event(old, True, change.revision)
        record = self.kind.parse(change.record.data)
        previous = self._records.get(change.name)
        self._remember(record, change.record.owner)
        self._revisions[change.name] = change.revision
        return Event(record, False, change.revision, previous)

    def revision_of(self, name: str) -> int:
        """The store revision the cached record was last written at (0: not cached)."""
        return self._revisions.get(name, 0)

    def __len__(self) -> int:
        return len(self._records)

    def names(self) -> list[str]:
        """The names of the current records."""
        return list(self._records)

    def get(self, name: str) -> M | None:
        """The current record of that name (read-only), or None."""
        return self._records.get(name)

    def owner(self, name: str) -> str | None:
        """The stored owner of a current record (None: no record, or registered in-process)."""
        return self._owners.get(name) if name in self._records else None

    def usage(self, owner: str) -> tuple[int, int]:
        """How many current records ``owner`` holds, and their serialised size in bytes."""
        return self._usage.get(owner, (0, 0))

    def _count(self, owner: str | None, record: M | None, sign: int) -> None:
        if owner is None or record is None:
            return
        count, size = self._usage.get(owner, (0, 0))
        count, size = count + sign, size + sign * record.ByteSize()
        if count <= 0:
            self._usage.pop(owner, None)
        else:
            self._usage[owner] = (count, size)

    def _services(self, record: M) -> Iterable[str]:
        return record.network_service_names if isinstance(record, NetworkServiceEndpoint) else ()

    def _remember(self, record: M, owner: str | None) -> None:
        self._forget(record.name)
        self._records[record.name] = record
        if owner is not None:
            self._owners[record.name] = owner
            self._count(owner, record, +1)
        for service in self._services(record):
            self._by_service[service].add(record.name)
        expires = expiry_of(record)
        if expires is not None:
            heapq.heappush(self._expiries, (expires, record.name))
            if self.on_expiry is not None:
                self.on_expiry()

    def _forget(self, name: str) -> M | None:
        old = self._records.pop(name, None)
        self._count(self._owners.pop(name, None), old, -1)
        if old is not None:
            for service in self._services(old):
                names = self._by_service[service]
                names.discard(name)
                if not names:
                    del self._by_service[service]
        return old

    def next_expiry(self) -> float | None:
        """The earliest expiry instant among current records, or None."""
        while self._expiries:
            at, name = self._expiries[0]
            current = self._records.get(name)
            if current is not None and expiry_of(current) == at:
                return at
            heapq.heappop(self._expiries)  # stale entry: refreshed or removed since
        return None

    def expired(self, now: float) -> list[M]:
        """Current records whose expiry is at or before ``now``."""
        return [
            record for record in self._records.values()
            if (at := expiry_of(record)) is not None and at <= now
        ]

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        async with self._writing(record.name):
            previous = self._records.get(record.name)
            kept = await self._write(record, next.ctx.values.get(OWNER))
        if previous is not None:
            next.ctx.values[REPLACED] = previous
        return await next.register(self.kind.copy(kept))

    async def _write(self, record: M, owner: str | None) -> M:
        old = self._records.get(record.name)
        if owner is None:
            owner = self.owner(record.name)
        if isinstance(record, NetworkServiceEndpoint):
            if isinstance(old, NetworkServiceEndpoint) and old.initial_registration_time.seconds:
                record.initial_registration_time.CopyFrom(old.initial_registration_time)
            elif not record.HasField("initial_registration_time"):
                record.initial_registration_time.GetCurrentTime()
        stored = StoredRecord(
            self.kind.key, record.name, record.SerializeToString(), expiry_of(record), owner
        )
        if self._follower is not None:  # written only if nobody changed it since we read it
            revision = await self._follower.store.put_at(stored, self.revision_of(record.name))
            await self._follower.reached(revision)
            current = self._records.get(record.name)
            return self.kind.copy(record) if current is None else current
        await self.store.put(stored)
        kept = self.kind.copy(record)
        self._remember(kept, owner)
        return kept

    async def find(self, query: Query[M], next: RegistryCursor[M]) -> AsyncIterator[Event[M]]:
        if self._follower is None:
            for record in self._matching(query):
                yield Event(record)
            return
        listed = list(self._matching(query))  # one snapshot: no await while it is taken
        revision = next.ctx.values[LISTED_AT] = self._follower.revision
        for index, record in enumerate(listed):
            yield Event(record, False, revision if index == len(listed) - 1 else 0)

    def _matching(self, query: Query[M]) -> Iterable[M]:
        template = query.template
        names: Iterable[str]
        if template.name:
            names = (template.name,)
        elif services := list(self._services(template)):
            names = set.intersection(*(self._by_service.get(s, set()) for s in services))
        else:
            names = list(self._records)
        for name in list(names):
            record = self._records.get(name)
            if record is not None and self.kind.matches(template, record):
                yield record

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        async with self._writing(record.name):
            old = self._records.get(record.name)
            if old is None:
                raise NotFound(f"{self.kind.title} {record.name!r} is not registered")
            if self._follower is not None:
                revision = await self._follower.store.delete_at(
                    self.kind.key, record.name, self.revision_of(record.name)
                )
                if revision is None:  # another replica, or the store's expiry, was first
                    raise NotFound(f"{self.kind.title} {record.name!r} is not registered")
                await self._follower.reached(revision)
                next.ctx.values[UNREGISTERED] = old
            else:
                await self.store.delete(self.kind.key, record.name)
                next.ctx.values[UNREGISTERED] = self._forget(record.name)
        await next.unregister(record)
