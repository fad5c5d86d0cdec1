"""Which forwarders of a name are alive on this host: one lock file per forwarder name.

A forwarder sweeps at start and at stop (:func:`forwarder.vwire.sweep`): it removes the marked
interfaces whose connection id starts with its name, in every namespace of the host, as the
leftovers of a run of it that is gone. Several forwarders of one name may run on one host: lab
fabrics, test runs and benchmarks side by side each name theirs ``forwarder-n1``,
``forwarder-n2``... Before this module, one starting or stopping deleted the live vWires of the
others (the tunnel device deleted under its wireguard-go, which ended with exit 0 and no error
line and was restarted by its supervisor, again at every other fabric's start or stop: the
daemon ends ``bench.scale`` counted while tests ran beside it).

Contract (:class:`NameLock`, one per forwarder process):

- :meth:`NameLock.hold` (at start, before the sweep) takes a shared ``flock`` on
  ``<directory>/<name>.lock`` for the life of the process; the kernel drops it with the
  process (a killed forwarder's too). Shared holds never wait for each other.
- :meth:`NameLock.holders` lists the pids holding it now (``/proc/locks``): the live forwarders
  of the name. Every vWire marker names the pid that made it (:mod:`forwarder.vwire.naming`).
- :meth:`NameLock.spare_others` makes one sweep's ``spare`` (it reads the holders once): it
  keeps what another live forwarder of the name made. What a dead one made (its pid holds no
  lock, even if the pid was reused), and markers without a pid, are swept as before.
  :meth:`NameLock.spare_all_but_mine` (at stop) keeps everything this process did not make.
- A directory that cannot be made or written raises ``FailedPrecondition`` naming it.
  :meth:`release` closes the lock (idempotent).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from forwarder.vwire import Leftover
from sdk.errors import FailedPrecondition

#: Host-wide, as the sweep (it looks into every namespace of the host): under the node's socket
#: directory, a host directory in Kubernetes too (deploy/base/node.yaml).
LOCK_DIR = Path("/var/run/vwire/forwarders")
LOCKS = Path("/proc/locks")


class NameLock:
    """See the module docstring."""

    def __init__(self, name: str, directory: Path = LOCK_DIR, locks: Path = LOCKS) -> None:
        self.name = name
        self.path = directory / f"{name.replace('/', '_')}.lock"
        self._locks = locks
        self._fd: int | None = None

    def hold(self) -> None:
        """Take the shared hold (idempotent)."""
        if self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise FailedPrecondition(
                f"forwarder lock {self.path}: {err.strerror}: the forwarder needs a writable "
                f"{self.path.parent} (it tells live forwarders of one name apart)"
            ) from None
        fcntl.flock(fd, fcntl.LOCK_SH)  # shared holds never wait for each other
        self._fd = fd

    def holders(self) -> set[int]:
        """Pids holding the lock now (this one's included while it holds it)."""
        if self._fd is None:
            return set()
        st = os.fstat(self._fd)
        inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        pids = set()
        for line in self._locks.read_text().splitlines():
            fields = line.split()  # "1: FLOCK ADVISORY READ 1234 00:19:5678 0 EOF"
            if "FLOCK" in fields and inode in fields:
                with contextlib.suppress(ValueError):
                    pids.add(int(fields[fields.index(inode) - 1]))
        return pids

    def spare_others(self) -> Callable[[Leftover], bool]:
        """A sweep's ``spare`` that keeps what another live forwarder of the name made. The
        holders are read once per sweep, when the first leftover made by another process is
        asked about: the sweep has listed its leftovers by then, and a forwarder holds the lock
        before it makes anything, so every maker of a listed leftover holds it then or is gone."""
        holders: set[int] | None = None

        def spare(item: Leftover) -> bool:
            nonlocal holders
            if item.owner is None or item.owner == os.getpid():
                return False
            if holders is None:
                holders = self.holders()
            return item.owner in holders

        return spare

    def spare_all_but_mine(self, item: Leftover) -> bool:
        """Keep ``item`` unless this process made it."""
        return item.owner != os.getpid()

    def release(self) -> None:
        """Drop the hold (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
