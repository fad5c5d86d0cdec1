"""The inotify instances every wireguard-go daemon holds: raise the limit, check it per daemon.

Each wireguard-go opens one inotify instance (it watches its UAPI socket file). The kernel caps
instances per user (``fs.inotify.max_user_instances``, 128 by default), so the 129th daemon of
root dies at start with "too many open files": about 64 live remote vWires when both ends run
on one host. Contract:

- :func:`raise_limit` (forwarder start) raises the limit to ``wanted`` when it is lower and
  returns the limit in force; when the file cannot be written (a read-only ``/proc/sys`` in a
  container) it logs and keeps the current one.
- :meth:`InotifyBudget.claim` is called before a daemon is spawned. It raises
  :class:`ResourceExhausted` naming the limit, the instances in use and the fix when fewer than
  ``margin`` + 1 instances are left, so a request fails cleanly before anything is made. It is
  cheap: it counts the instances in use (a walk over ``/proc/*/fd``) once, then estimates with
  the daemons it has seen start, and counts again whenever the estimate is within a quarter of
  the limit (other processes, e.g. another forwarder on the host, may have taken some).
- :func:`exhausted_message` turns a daemon's "too many open files" exit into the same advice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import structlog

from sdk.errors import ResourceExhausted

log = structlog.get_logger()

LIMIT_FILE = Path("/proc/sys/fs/inotify/max_user_instances")
SETTING = "fs.inotify.max_user_instances"
#: What the forwarder raises the limit to: 4 000 vWires with both ends on one host.
WANTED = 8192
_INOTIFY_LINK = "anon_inode:inotify"


class _Daemon(Protocol):
    @property
    def returncode(self) -> int | None: ...


def read_limit(path: Path = LIMIT_FILE) -> int:
    """The limit in force (the integer in ``path``)."""
    return int(path.read_text().strip())


def raise_limit(wanted: int = WANTED, path: Path = LIMIT_FILE) -> int:
    """Raise the limit in ``path`` to ``wanted`` if it is lower; the limit in force after."""
    current = read_limit(path)
    if current >= wanted:
        return current
    try:
        path.write_text(f"{wanted}\n")
    except OSError as err:
        log.warning("inotify_limit_not_raised", setting=SETTING, limit=current, wanted=wanted,
                    error=err.strerror)
        return current
    log.info("inotify_limit_raised", setting=SETTING, old=current, new=wanted)
    return read_limit(path)


def instances_in_use(uid: int | None = None, pids: Iterable[int] | None = None) -> int:
    """Inotify instances held by processes whose effective uid is ``uid`` (default: ours),
    among ``pids`` when given (default: every process)."""
    uid = os.geteuid() if uid is None else uid
    count = 0
    listed = os.listdir("/proc") if pids is None else [str(pid) for pid in pids]
    for pid in listed:
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):  # processes come and go while we look
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == _INOTIFY_LINK:
                        count += 1
    return count


def exhausted_message(limit: int, in_use: int) -> str:
    """What to tell the caller when no inotify instance is left for a new daemon."""
    return (
        f"wireguard-go: no inotify instance left for another daemon ({in_use} in use, "
        f"{SETTING}={limit}; each wireguard-go needs one): close vWires or raise the limit "
        f"(sysctl -w {SETTING}={max(WANTED, limit * 2)})"
    )


class InotifyBudget:
    """See the module docstring; one per process (:data:`DEFAULT_BUDGET`)."""

    def __init__(
        self,
        limit: Callable[[], int] = read_limit,
        count: Callable[[], int] = instances_in_use,
        margin: int = 8,
    ) -> None:
        self._limit = limit
        self._count = count
        self.margin = margin
        self._baseline: int | None = None  # instances in use by others at the last count
        self._daemons: weakref.WeakSet[_Daemon] = weakref.WeakSet()

    def _live(self) -> int:
        return sum(1 for daemon in list(self._daemons) if daemon.returncode is None)

    async def claim(self, daemon: _Daemon) -> None:
        """Check there is room for one more daemon (module docstring), then count ``daemon``.
        A count walks ``/proc`` (tens of ms): it runs in a thread, off the event loop."""
        limit = self._limit()
        slack = max(self.margin, limit // 4)  # other forwarders' daemons are not seen starting
        if self._baseline is None or self._baseline + self._live() + 1 + slack > limit:
            in_use = await asyncio.to_thread(self._count)
            self._baseline = max(0, in_use - self._live())
            if in_use + 1 + self.margin > limit:
                raise ResourceExhausted(exhausted_message(limit, in_use))
        self._daemons.add(daemon)


DEFAULT_BUDGET = InotifyBudget()
"""The process's budget: every :class:`forwarder.wireguard.process.WgGoProcess` claims from it."""
