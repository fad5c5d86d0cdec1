"""``Follower``: keeps one registry replica in step with a shared store (etcd).

Contract: built over the ``Persist`` and ``Watch`` elements of each kind, it makes ``Persist``
write through it and ``Watch`` announce only what it publishes. :meth:`Follower.load` fills the
replica's caches from one snapshot of the store and marks that revision as where the watch
history starts (``Watch.floor``). :meth:`Follower.run` then reads the store's change stream (one
per replica, whoever made the change: this replica, another one, or the store's own lease
expiry) and, for each change in revision order, updates the cache of its kind and publishes the
event (with its revision) to that kind's watchers in the same step, so a listing taken between
two changes and the events after it never overlap. :attr:`Follower.revision` is the last
revision applied; :meth:`Follower.reached` waits until a revision (e.g. of this replica's own
write) is applied, or raises Unavailable after ``REACH_TIMEOUT``. If the store lost the history
the stream needed (:class:`~sdk.registry.store.HistoryLost`), or the stream failed otherwise
(logged, after a back-off), ``run`` loads a new snapshot and publishes the difference (records
gone as deleted, new or changed ones as registered) before following again;
watchers whose resume point is older than that snapshot are then refused by ``Watch`` and list
again. Records of a kind it does not know, or whose data does not parse, are ignored (logged).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import structlog
from google.protobuf.message import DecodeError

from sdk.errors import FabricError, Unavailable
from sdk.registry.core import Event
from sdk.registry.persist import Persist
from sdk.registry.store import Change, HistoryLost, SharedStore
from sdk.registry.watch import Watch

_log = structlog.get_logger("registry.follow")

#: Longest a write waits for this replica to see it in the store's change stream.
REACH_TIMEOUT = 10.0


class Follower:
    """See the module docstring. ``kinds`` pairs each kind's ``Persist`` with its ``Watch``."""

    def __init__(
        self, store: SharedStore, kinds: Sequence[tuple[Persist[Any], Watch[Any]]]
    ) -> None:
        self.store = store
        self._kinds = {persist.kind.key: (persist, watch) for persist, watch in kinds}
        self.revision = 0
        self._advanced = asyncio.Event()
        for persist, watch in kinds:
            persist.follow(self)
            watch.publish_local = False  # changes reach watchers from the store's stream only

    async def load(self, now: float | None = None) -> int:
        """Fill the caches from a snapshot of the store; returns how many records it held."""
        revision, changes = await self.store.snapshot(time.time() if now is None else now)
        self._resync(revision, changes, publish=False)
        return len(changes)

    def _resync(self, revision: int, changes: list[Change], publish: bool) -> None:
        """Make the caches what the snapshot at ``revision`` holds; with ``publish``, announce
        what differs, at that revision."""
        wanted = {(c.kind, c.name): c for c in changes if c.record is not None}
        for key, (persist, watch) in self._kinds.items():
            for name in [n for n in persist.names() if (key, n) not in wanted]:
                self._apply(Change(revision, key, name, None), publish, revision)
            watch.floor = revision
        for (kind, name), change in wanted.items():
            persist_watch = self._kinds.get(kind)
            if persist_watch is None or change.record is None:
                continue
            persist = persist_watch[0]
            current = persist.get(name)
            if current is None or current.SerializeToString() != change.record.data:
                self._apply(change, publish, revision)
            elif persist.revision_of(name) != change.revision:
                self._apply(change, publish=False)  # same record, written again: no news
        self._advance(revision)

    def _apply(self, change: Change, publish: bool = True, announce_at: int = 0) -> None:
        persist_watch = self._kinds.get(change.kind)
        if persist_watch is None:
            return
        persist, watch = persist_watch
        try:
            event: Event[Any] | None = persist.apply(change)
        except DecodeError as e:  # not a record this fabric wrote: never served
            _log.error("ignoring a stored record that does not parse", kind=change.kind,
                       name=change.name, revision=change.revision, error=str(e))
            return
        if event is not None and publish:
            watch.publish(replace(event, revision=announce_at) if announce_at else event)

    def _advance(self, revision: int) -> None:
        self.revision = max(self.revision, revision)
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    async def reached(self, revision: int, timeout: float = REACH_TIMEOUT) -> None:
        """Return once every change up to ``revision`` is applied; Unavailable when that takes
        longer than ``timeout`` (the replica is not following the store)."""
        try:
            async with asyncio.timeout(timeout):
                while self.revision < revision:
                    await self._advanced.wait()
        except TimeoutError:
            raise Unavailable(
                f"this registry replica has not caught up with the store's revision {revision} "
                f"within {timeout:g} s (it follows at {self.revision}); try another replica"
            ) from None

    async def run(self) -> None:
        """Follow the store's changes until cancelled (see the module docstring). Any other
        failure of the stream is logged and followed by a new snapshot, after a back-off."""
        failures = 0
        while True:
            try:
                async for change in self.store.changes(self.revision):
                    self._apply(change)
                    self._advance(change.revision)
                    failures = 0
            except HistoryLost as e:
                _log.warning("registry replica lost the store's history; loading it again",
                             error=str(e))
            except (FabricError, OSError) as e:
                failures += 1
                _log.error("registry replica stopped following the store; loading it again",
                           error=str(e), failures=failures)
                await asyncio.sleep(min(0.1 * 2 ** min(failures, 5), 3.0))  # back-off
            try:
                revision, changes = await self.store.snapshot(time.time())
            except (FabricError, OSError) as e:
                _log.error("loading the store again failed", error=str(e))
                continue
            self._resync(revision, changes, publish=True)
