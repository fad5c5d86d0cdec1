"""Which forwarder of a name may sweep: one lock file per forwarder name and host.

A forwarder sweeps at start and at stop (:func:`forwarder.vwire.sweep`): it removes every marked
interface whose connection id starts with its name, in every namespace of the host, as the
leftovers of a run of it that is gone. That holds only while no other forwarder of the same name
runs on the host. Several fabrics on one machine (labs, test runs, benchmarks) each name their
forwarders ``forwarder-n1``, ``forwarder-n2``...: one starting or stopping deleted the live
vWires of the others (the tunnel device deleted under its wireguard-go, which ended with exit 0
and no error line and was restarted by its supervisor, again at every other fabric's start or
stop: the daemon ends ``bench.scale`` counted).

Contract (:class:`NameLock`, one per forwarder process):

- :meth:`NameLock.acquire` (at start) takes ``<directory>/<name>.lock`` with ``flock``: True when
  it got it exclusively — no live forwarder of the name holds it, so whatever carries the name's
  marker is a dead run's and may be swept; False when another live forwarder of the name holds
  it — sweep nothing. In both cases the caller ends up holding it (exclusive, or shared after a
  bounded wait while another one sweeps); :meth:`share` (after the sweep) turns an exclusive
  hold into a shared one, so forwarders of the name starting later see this one alive.
- :meth:`NameLock.sole` (at stop) is True when no other live forwarder of the name holds it now.
- The kernel drops a holder's lock with its last descriptor: a killed forwarder's successor gets
  the lock exclusively and sweeps what the killed one left. :meth:`release` closes it.
- A directory that cannot be made or written raises ``FailedPrecondition`` naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path

import structlog

from sdk.errors import FailedPrecondition

log = structlog.get_logger()

#: Host-wide (the sweep looks into every namespace of the host, so the lock is host-wide too).
LOCK_DIR = Path("/run/vwire/forwarders")
#: How long a starting forwarder waits for another one of its name to finish its sweep.
WAIT_SECONDS = 30.0


class NameLock:
    """See the module docstring."""

    def __init__(self, name: str, directory: Path = LOCK_DIR) -> None:
        self.name = name
        self.path = directory / f"{name.replace('/', '_')}.lock"
        self._fd: int | None = None

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise FailedPrecondition(
                f"forwarder lock {self.path}: {err.strerror}: the forwarder needs a writable "
                f"{self.path.parent} (it tells forwarders of one name on a host apart)"
            ) from None

    async def acquire(self, wait: float = WAIT_SECONDS) -> bool:
        """Hold the lock; True when no other live forwarder of the name holds it."""
        if self._fd is None:
            self._fd = self._open()
        if _try(self._fd, fcntl.LOCK_EX):
            return True
        await self._shared(wait)
        log.warning("forwarder_name_in_use", name=self.name, lock=str(self.path),
                    detail="another forwarder of this name runs on this host: nothing is swept")
        return False

    async def share(self, wait: float = WAIT_SECONDS) -> None:
        """Turn an exclusive hold into a shared one (a shared hold stays as it is)."""
        if self._fd is not None:
            await self._shared(wait)

    async def _shared(self, wait: float) -> None:
        assert self._fd is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not _try(self._fd, fcntl.LOCK_SH):  # another one holds it exclusively: sweeping
            if loop.time() >= deadline:
                raise FailedPrecondition(
                    f"forwarder lock {self.path}: another forwarder named {self.name} held it "
                    f"exclusively for {wait} s: stop it, or give this forwarder another name"
                )
            await asyncio.sleep(0.05)  # bounded: the holder's sweep ends

    def sole(self) -> bool:
        """True when no other live forwarder of the name holds the lock now (this one then
        holds it exclusively). A conversion that fails drops this hold (``flock`` converts by
        unlocking first): it is only asked at stop, before :meth:`release`."""
        return self._fd is not None and _try(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _try(fd: int, kind: int) -> bool:
    """Take (or convert to) ``kind`` without waiting; False when another holder prevents it."""
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
