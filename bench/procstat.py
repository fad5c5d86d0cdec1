"""What processes cost, read from ``/proc``: CPU seconds and memory (RSS, PSS).

- :func:`cpu_seconds` sums user+system time of processes *and of their children they have
  waited for* (``cutime``/``cstime``): a forwarder's wireguard-go daemons that ended during a
  measurement are counted through their parent. A process that is gone counts 0.
- :class:`CpuMeter` measures CPU spent between :meth:`CpuMeter.start` and :meth:`CpuMeter.stop`
  by a set of processes given by a function (re-read at both ends, so processes started in
  between count whole), plus the calling process itself, by kind of process. The meter's own
  work (the function, e.g. a scan of ``/proc``, and the reading of ``/proc``) is not counted as
  the calling process's: its CPU is read after that work at start and before it at stop.
- :func:`rss_bytes` / :func:`pss_bytes`: resident and proportional set size of one process
  (PSS splits shared pages, such as one binary's text, between the processes that map them).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterable

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_cpu(pid: int) -> tuple[float, float]:
    """(own, waited-for children's) CPU seconds of ``pid``; zeros when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    # fields[0] is the state (field 3); utime, stime, cutime, cstime are fields 14-17.
    own = (int(fields[11]) + int(fields[12])) / _TICK
    return own, (int(fields[13]) + int(fields[14])) / _TICK


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds of each process, its waited-for children included."""
    return {pid: sum(_stat_cpu(pid)) for pid in pids}


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
        self._before: dict[int, tuple[float, float]] = {}
        self._names: dict[int, str] = {}
        self._self = 0.0

    def start(self) -> None:
        self._names = dict(self._kinds())
        self._before = {pid: _stat_cpu(pid) for pid in self._names}
        self._self = self_cpu()

    def stop(self) -> dict[str, float]:
        mine = self_cpu() - self._self  # read first: listing the processes costs CPU here too
        names = {**self._names, **self._kinds()}
        spent: dict[str, float] = {SELF: mine}
        for pid, kind in names.items():
            own, children = _stat_cpu(pid)
            if not own and not children:  # gone: what it spent is not known
                continue
            before = self._before.get(pid, (0.0, 0.0))
            spent[kind] = spent.get(kind, 0.0) + max(0.0, own - before[0])
            key = f"{kind} children"
            spent[key] = spent.get(key, 0.0) + max(0.0, children - before[1])
        return {kind: seconds for kind, seconds in spent.items() if seconds > 0}


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
