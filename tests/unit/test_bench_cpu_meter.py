"""bench.procstat.CpuMeter counts what the measured work cost, not its own bookkeeping."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.procstat import SELF, CpuMeter, busy_share, machine_ticks, self_cpu


def _burn(seconds: float) -> None:
    """Spend about ``seconds`` of CPU in this process."""
    start = self_cpu()
    while self_cpu() - start < seconds:
        sum(range(10_000))


def test_the_time_spent_listing_processes_is_not_counted_as_this_processs() -> None:
    def costly_listing() -> dict[int, str]:  # stands in for a scan of /proc
        _burn(0.2)
        return {os.getpid(): "listed"}

    meter = CpuMeter(costly_listing)
    meter.start()
    time.sleep(0.01)  # the measured work costs next to nothing
    spent = meter.stop()
    assert spent.get(SELF, 0.0) < 0.1  # was ~0.2: the listing at stop was counted


def test_the_measured_work_is_counted() -> None:
    meter = CpuMeter(dict)
    meter.start()
    _burn(0.2)
    assert meter.stop()[SELF] >= 0.19


_CHILD = """
import sys, time
def burn(seconds):
    start = time.process_time()
    while time.process_time() - start < seconds:
        sum(range(1000))
burn(float(sys.argv[1]))
print("burnt", flush=True)
sys.stdin.readline()
burn(float(sys.argv[2]))
"""


def _child(before: float, after: float) -> subprocess.Popen[str]:
    """A process that spends ``before`` s of CPU, says so, then on a line on stdin spends
    ``after`` s more and ends."""
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(before), str(after)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "burnt\n"
    return child


def test_a_process_started_during_the_measurement_counts_its_milliseconds() -> None:
    listed: dict[int, str] = {}
    meter = CpuMeter(lambda: dict(listed))
    meter.start()
    shell = subprocess.Popen(["sh", "-c", "echo started; read line"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert shell.stdout is not None and shell.stdout.readline() == "started\n"
        listed[shell.pid] = "daemon"
        spent = meter.stop()
    finally:
        shell.communicate("\n")
    # a shell starting spends about a millisecond: less than one clock tick, which
    # /proc/PID/stat rounds down to 0 s
    assert 0.0 < spent.get("daemon", 0.0) < 0.01


def test_a_process_that_ended_counts_once_what_it_spent_in_between() -> None:
    child = _child(0.15, 0.05)
    meter = CpuMeter(lambda: {os.getpid(): "parent", child.pid: "daemon"})
    meter.start()
    child.communicate("\n")  # ends and is waited for: its whole life moves to our children
    spent = meter.stop()
    assert 0.03 <= spent["parent children"] <= 0.1  # was ~0.2: what it spent before, again
    assert "daemon" not in spent


def test_the_machine_share_busy_counts_this_process_burning_one_core() -> None:
    before = machine_ticks()
    _burn(0.3)
    share = busy_share(before, machine_ticks())
    # one core of os.cpu_count() busy at least (other work only adds), never more than all
    assert 0.8 / (os.cpu_count() or 1) <= share <= 1.0


def test_the_busy_share_of_two_readings() -> None:
    assert busy_share((100, 400), (250, 600)) == 0.75
    assert busy_share((100, 400), (100, 400)) == 0.0  # no tick between: nothing to divide
