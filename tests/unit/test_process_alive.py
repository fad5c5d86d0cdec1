"""``lab.processes.alive`` and ``wait_gone`` against a real process whose main thread has exited
while another thread still holds its listening socket (what a SIGKILLed multi-threaded server
looks like for a moment: its main thread is a zombie, its sockets still accept). Taking it for
gone let a test see the old gateway's socket accept and send a request before the restarted
gateway listened."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from lab.processes import alive, signal_groups, wait_gone

# The main thread leaves with the exit system call (only that thread ends), a second thread
# keeps the listening socket open.
HALF_EXITED = r"""
import ctypes, socket, sys, threading, time
listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[1])
listener.listen()
threading.Thread(target=time.sleep, args=(60,)).start()
print("listening", flush=True)
ctypes.CDLL(None, use_errno=True).syscall(60, 0)  # SYS_exit (x86_64): this thread only
"""


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def test_a_zombie_main_thread_with_a_live_thread_is_alive(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    child = subprocess.Popen([sys.executable, "-c", HALF_EXITED, str(path)],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "listening\n"
        deadline = time.monotonic() + 10
        while _state(child.pid) != "Z":
            assert time.monotonic() < deadline, "the main thread did not exit"
            time.sleep(0.02)  # bounded by the deadline
        assert _accepts(path), "the remaining thread keeps the socket listening"
        assert alive(child.pid)
        assert wait_gone([child.pid], 0.2) == [child.pid]

        signal_groups([child.pid], signal.SIGKILL)
        assert wait_gone([child.pid], 10) == []
        assert not _accepts(path)
    finally:
        child.kill()
        child.wait(10)
