"""A lab pid file whose pid was reused by another process never gets that process signalled.

Pids wrap at ``kernel.pid_max`` (32768 on this machine) within minutes when fabrics start
hundreds of wireguard-go daemons; each daemon leads its own process group, so signalling the
group of a stale pid file's pid killed an unrelated live daemon (seen as wireguard-go ending
cleanly in the middle of a burst).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from lab.processes import Processes, alive, started_at
from lab.topology import Topology


def test_a_reused_pid_is_not_a_recorded_process(tmp_path: Path) -> None:
    processes = Processes(Topology("vwtstale-", tmp_path / "state"))
    processes.dir.mkdir(parents=True)
    # Someone else's process now holds the pid that an old pid file names.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             start_new_session=True)
    try:
        pid_file = processes.dir / "nse-gone.pid"
        pid_file.write_text(str(other.pid))
        old = time.time() - 120  # written two minutes ago, when its own process started
        os.utime(pid_file, (old, old))
        assert processes.pid_of("nse-gone") is None
        processes.stop("nse-gone", grace=0.1)  # must not signal the other process
        assert alive(other.pid) and other.poll() is None
        # A pid file written after its process started names that process.
        fresh = processes.dir / "nse-live.pid"
        fresh.write_text(str(other.pid))
        assert processes.pid_of("nse-live") == other.pid
    finally:
        other.kill()
        other.wait()


def test_started_at_is_the_process_start() -> None:
    started = started_at(os.getpid())
    assert started is not None and 0 <= time.time() - started < 86400
    assert started_at(2**22 + 1) is None  # above any pid_max: no such process
