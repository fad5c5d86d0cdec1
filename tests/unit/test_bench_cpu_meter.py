"""bench.procstat.CpuMeter counts what the measured work cost, not its own bookkeeping."""

from __future__ import annotations

import os
import time

from bench.procstat import SELF, CpuMeter, self_cpu


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
