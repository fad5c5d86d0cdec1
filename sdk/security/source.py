"""Where a process gets its current SVID and trust bundle, and learns they changed.

Contract of every :class:`SvidSource`: ``current()`` returns the :class:`Material` to use now (an
SVID that has not expired, and the bundle); it is cheap, synchronous and thread-safe, because
gRPC's TLS handshakes call it from their own threads. ``generation`` grows by one each time the
material changes, so a consumer that cached something derived from it (TLS credentials, a channel)
can tell it is stale. Listeners added with ``subscribe`` are called (with the new material) after
each change, in whatever thread noticed it; they must not block.

Implementations here (a SPIRE Workload API source would be a third):
- :class:`FileSvidSource` reads ``svid.crt``/``svid.key``/``bundle.pem`` from a directory and
  re-reads them when their size, inode or change time (ctime) changes (it checks on ``current()``,
  at most every ``poll`` seconds); a half-written or mismatched set keeps the previous material.
  Files others could tamper with (:func:`sdk.security.svid.check_svid_files`: a key readable by
  group or others, a bundle writable by them or owned by another user) are refused: at start
  with ``FailedPrecondition`` naming the file and the fix, later by keeping the previous
  material and logging the reason.
- :class:`CaSvidSource` issues its own SVIDs from an in-process
  :class:`sdk.security.ca.CertificateAuthority` and issues a fresh one once ``renew_fraction``
  (default 50%) of the current one's lifetime has passed, on the next ``current()``, or once the
  CA's root or federated bundles changed.

Federation: every source also gives the bundles of the foreign trust domains it federates with
(``Material.foreign``; ``Material.trust`` is the :class:`sdk.security.federation.BundleSet` to
verify peers and tokens with). :class:`FileSvidSource` reads them from ``federated/<td>.pem`` in
its directory (same ownership and mode checks, same change detection: a bundle added, replaced
or removed is a new generation); a broken federated file is like a broken SVID file.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

import structlog

from sdk.errors import FabricError, Unauthenticated
from sdk.security.ca import DEFAULT_SVID_TTL, CertificateAuthority
from sdk.security.federation import BundleSet, read_federated
from sdk.security.spiffe import SpiffeId
from sdk.security.svid import (
    BUNDLE_FILE,
    CERT_FILE,
    FEDERATED_DIR,
    KEY_FILE,
    Svid,
    TrustBundle,
    check_svid_files,
    read_svid,
)

_log = structlog.get_logger("sdk.security")

Clock = Callable[[], float]
Listener = Callable[["Material"], None]


@dataclass(frozen=True)
class Material:
    """One consistent set: this process's SVID, the bundle of its own trust domain (``bundle``)
    and the bundles of the foreign trust domains it federates with (``foreign``). ``trust`` is
    the :class:`BundleSet` of both: verify peers and path tokens with it; ``bundle`` alone
    verifies only local identities."""

    svid: Svid
    bundle: TrustBundle
    generation: int
    foreign: tuple[TrustBundle, ...] = ()

    @property
    def spiffe_id(self) -> SpiffeId:
        return self.svid.spiffe_id

    @cached_property
    def trust(self) -> BundleSet:
        """The local and the federated bundles (one object per material, so caches keyed by it
        live as long as the material)."""
        return BundleSet(self.bundle, self.foreign)


class SvidSource(Protocol):
    """See the module docstring."""

    @property
    def generation(self) -> int: ...

    def current(self) -> Material: ...

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` after every change; returns a function that unsubscribes."""
        ...


class _Publisher:
    """The shared half of every source: the current material, generations, listeners."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._material: Material | None = None
        self._listeners: list[Listener] = []

    @property
    def generation(self) -> int:
        return 0 if self._material is None else self._material.generation

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _publish(
        self, svid: Svid, bundle: TrustBundle, foreign: tuple[TrustBundle, ...] = ()
    ) -> Material:
        with self._lock:
            material = Material(svid, bundle, self.generation + 1, foreign)
            material.trust  # noqa: B018 - checks the set (one bundle per trust domain) now
            self._material = material
            listeners = list(self._listeners)
        event = "svid loaded" if material.generation == 1 else "svid rotated"
        _log.info(event, spiffe_id=str(svid.spiffe_id), serial=f"{svid.serial:x}",
                  not_after=svid.not_after, generation=material.generation,
                  federated=[b.trust_domain for b in foreign])
        for listener in listeners:
            try:
                listener(material)
            except Exception:
                _log.exception("svid listener failed")
        return material


class FileSvidSource(_Publisher):
    """See the module docstring."""

    def __init__(self, directory: Path, poll: float = 1.0, clock: Clock = time.time) -> None:
        super().__init__(clock)
        self.directory = directory
        self.poll = poll
        self._stamp: tuple[tuple[int, int, int], ...] = ()
        self._checked = float("-inf")
        self._reload(force=True)

    def __repr__(self) -> str:
        return f"<FileSvidSource {self.directory}>"

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        # ctime changes with the content and with chmod/chown too (re-checked by the guard).
        stamps = []
        for path in (self.directory, *(self.directory / n for n in (CERT_FILE, KEY_FILE,
                                                                     BUNDLE_FILE))):
            st = os.stat(path)
            stamps.append((st.st_ino, st.st_size, st.st_ctime_ns))
        federated = self.directory / FEDERATED_DIR
        if federated.is_dir():  # its ctime changes when a bundle is added, replaced or removed
            for path in (federated, *sorted(federated.iterdir())):
                if path.name.startswith("."):
                    continue  # a bundle being written (renamed into place when complete)
                st = os.stat(path)
                stamps.append((st.st_ino, st.st_size, st.st_ctime_ns))
        return tuple(stamps)

    def _reload(self, force: bool = False) -> None:
        try:
            stamp = self._stat()
            if stamp == self._stamp and not force:
                return
            check_svid_files(self.directory)
            svid, bundle = read_svid(self.directory)
            foreign = read_federated(self.directory, bundle.trust_domain)
        except (OSError, FabricError) as exc:
            if force:
                raise
            _log.warning("svid files unreadable, keeping the previous svid",
                         directory=str(self.directory), error=str(exc))
            return
        self._stamp = stamp
        self._publish(svid, bundle, foreign)

    def current(self) -> Material:
        with self._lock:
            now = self._clock()
            if now - self._checked >= self.poll:
                self._checked = now
                self._reload()
            assert self._material is not None
            if self._material.svid.not_after <= now:
                raise Unauthenticated(
                    f"{self._material.svid} in {self.directory} expired and no newer one was "
                    "written: renew it ('nsmctl ca issue')"
                )
            return self._material


class RenewingSource(_Publisher):
    """The shared half of sources that renew their SVID themselves: when (a fraction of the
    SVID's lifetime after it was got) and publishing a renewed one."""

    def __init__(self, clock: Clock, renew_fraction: float) -> None:
        super().__init__(clock)
        if not 0 < renew_fraction < 1:
            raise ValueError("renew_fraction must be between 0 and 1")
        self.renew_fraction = renew_fraction
        self._renew_at = 0.0

    @property
    def renew_at(self) -> float:
        """The instant after which ``current()`` gets a fresh SVID."""
        return self._renew_at

    def _renewed(self, svid: Svid, bundle: TrustBundle, now: float,
                 foreign: tuple[TrustBundle, ...] = ()) -> Material:
        """Publish ``svid`` (got at ``now``) and set when to renew it."""
        self._renew_at = now + (svid.not_after - now) * self.renew_fraction
        return self._publish(svid, bundle, foreign)


class CaSvidSource(RenewingSource):
    """See the module docstring."""

    def __init__(
        self,
        ca: CertificateAuthority,
        spiffe_id: str | SpiffeId,
        dns_names: Sequence[str] = (),
        ttl: float = DEFAULT_SVID_TTL,
        renew_fraction: float = 0.5,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(clock, renew_fraction)
        self.ca = ca
        self.spiffe_id = spiffe_id if isinstance(spiffe_id, SpiffeId) else SpiffeId.workload(
            spiffe_id
        )
        self.dns_names = tuple(dns_names)
        self.ttl = ttl
        self._trusted = self._trust_stamp()
        self.rotate()

    def __repr__(self) -> str:
        return f"<CaSvidSource {self.spiffe_id}>"

    def _trust_stamp(self) -> list[tuple[str, list[str]]]:
        return [(b.trust_domain, b.fingerprints()) for b in (self.ca.bundle, *self.ca.federated)]

    def rotate(self) -> Material:
        """Issue a fresh SVID now (also picks up a rotated CA root and changed federation)."""
        with self._lock:
            now = self._clock()
            svid = self.ca.issue(self.spiffe_id, self.dns_names, self.ttl, now=now)
            self._trusted = self._trust_stamp()
            return self._renewed(svid, self.ca.bundle, now, self.ca.federated)

    def current(self) -> Material:
        with self._lock:
            if self._clock() >= self._renew_at or self._trust_stamp() != self._trusted:
                return self.rotate()
            assert self._material is not None
            return self._material
