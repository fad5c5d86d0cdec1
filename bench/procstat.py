"""What processes cost, read from ``/proc``: CPU seconds and memory (RSS, PSS).

- :func:`process_cpu` is the exact CPU time of a live process, all its threads (those that ended
  too), from its CPU-time clock (``clock_getcpuclockid(3)``, nanoseconds). ``/proc/PID/stat``
  counts in clock ticks (10 ms) and rounds down: a process started during a short measurement,
  such as a wireguard-go daemon that spent 4 ms starting, reads 0 there.
- :func:`cpu_seconds` sums a process's own CPU time and that of the children it has waited for
  (``cutime``/``cstime``, clock ticks): a forwarder's wireguard-go daemons that ended are
  counted through their parent. A process that is gone counts 0.
- :class:`CpuMeter` measures CPU spent between :meth:`CpuMeter.start` and :meth:`CpuMeter.stop`
  by a set of processes given by a function (re-read at both ends, so processes started in
  between count whole), plus the calling process itself, by kind of process. A process listed
  at start that ended in between (its parent waited for it) counts through its parent's
  children, less what it had spent at start: its whole life, counted there, would count that
  part twice. The meter's own work (the function, e.g. a scan of ``/proc``, and the reading of
  ``/proc``) is not counted as the calling process's: its CPU is read after that work at start
  and before it at stop.
- :func:`machine_ticks` reads the whole machine's busy and total CPU time (all cores, every
  process and the kernel's own threads, from ``/proc/stat``); :func:`busy_share` is the busy
  share between two readings.
- :func:`rss_bytes` / :func:`pss_bytes`: resident and proportional set size of one process
  (PSS splits shared pages, such as one binary's text, between the processes that map them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def process_cpu(pid: int) -> float | None:
    """Exact CPU seconds of process ``pid`` so far (all threads); None when it is gone."""
    clock = ctypes.c_int()
    if _LIBC.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        return None
    try:
        return time.clock_gettime(clock.value)
    except OSError:  # ended between the two calls
        return None


@dataclass(frozen=True)
class _Reading:
    own: float  # exact
    children: float  # waited-for children, clock ticks
    parent: int


def _read(pid: int) -> _Reading | None:
    """What ``pid`` and its waited-for children spent so far, and its parent; None when gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    own = process_cpu(pid)
    if own is None:
        return None
    # fields[0] is the state (field 3); ppid is field 4; cutime, cstime are fields 16-17.
    return _Reading(own, (int(fields[13]) + int(fields[14])) / _TICK, int(fields[1]))


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds of each process, its waited-for children included (0 when it is gone)."""
    readings = {pid: _read(pid) for pid in pids}
    return {pid: r.own + r.children if r else 0.0 for pid, r in readings.items()}


def self_cpu() -> float:
    """CPU seconds of this process (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


SELF = "this process"


class CpuMeter:
    """CPU seconds spent between start and stop by the processes ``kinds()`` names (pid ->
    kind), by kind; the waited-for children of a process of kind K count as ``K children``;
    this process counts as :data:`SELF`."""

    def __init__(self, kinds: Callable[[], dict[int, str]]) -> None:
        self._kinds = kinds
        self._before: dict[int, _Reading] = {}
        self._names: dict[int, str] = {}
        self._self = 0.0

    def start(self) -> None:
        self._names = dict(self._kinds())
        self._before = {pid: r for pid in self._names if (r := _read(pid)) is not None}
        self._self = self_cpu()

    def stop(self) -> dict[str, float]:
        mine = self_cpu() - self._self  # read first: listing the processes costs CPU here too
        names = {**self._names, **self._kinds()}
        spent: dict[str, float] = {SELF: mine}
        zero = _Reading(0.0, 0.0, 0)
        for pid, kind in names.items():
            now, before = _read(pid), self._before.get(pid, zero)
            if now is None:  # gone: its parent's children count its whole life
                if before.parent in names:
                    key = f"{names[before.parent]} children"
                    spent[key] = spent.get(key, 0.0) - before.own
                continue
            spent[kind] = spent.get(kind, 0.0) + now.own - before.own
            key = f"{kind} children"
            spent[key] = spent.get(key, 0.0) + now.children - before.children
        return {kind: seconds for kind, seconds in spent.items() if seconds}


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot; idle and I/O wait are not busy."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = stat.readline().split()
    # cpu user nice system idle iowait irq softirq steal (guest time is in user already)
    ticks = [int(value) for value in fields[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of all cores' time that was busy between two :func:`machine_ticks` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def _status_kb(pid: int, field: str, path: str = "status") -> int:
    try:
        with open(f"/proc/{pid}/{path}", encoding="ascii") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (0 when it is gone)."""
    return _status_kb(pid, "VmRSS:") * 1024


def pss_bytes(pid: int) -> int:
    """Proportional set size of ``pid`` (0 when it is gone)."""
    return _status_kb(pid, "Pss:", "smaps_rollup") * 1024
