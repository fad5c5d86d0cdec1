"""The lab's processes: started detached, logged to files, stopped by their pid files.

Every process gets ``<STATE_DIR>/<name>.pid`` and ``<name>.log``. :func:`stop_all` sends SIGTERM
to every recorded process, waits a bounded time, then SIGKILLs what is left, and finally kills
any ``wireguard-go`` still running inside a lab namespace (e.g. after a forwarder was killed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lab.topology import PREFIX, STATE_DIR


def start(name: str, args: Sequence[str], netns: str | None = None) -> int:
    """Start ``python -m <args>`` (inside ``netns``) in the background; returns its pid."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    prefix = ["ip", "netns", "exec", netns] if netns else []
    with open(STATE_DIR / f"{name}.log", "ab") as log:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    (STATE_DIR / f"{name}.pid").write_text(str(process.pid))
    return process.pid


def pid_of(name: str) -> int | None:
    """The pid of a running lab process, or None."""
    try:
        pid = int((STATE_DIR / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def recorded() -> list[str]:
    """Names of every process the lab recorded (running or not)."""
    if not STATE_DIR.exists():
        return []
    return sorted(p.stem for p in STATE_DIR.glob("*.pid"))


def _wait_gone(pids: Sequence[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for process exit, bounded by the deadline
        left = [p for p in left if alive(p)]
    return left


def stop(name: str, grace: float = 5.0) -> None:
    """Stop one lab process (SIGTERM, then SIGKILL after ``grace``)."""
    pid = pid_of(name)
    if pid is not None:
        _signal([pid], signal.SIGTERM)
        _signal(_wait_gone([pid], grace), signal.SIGKILL)
        _wait_gone([pid], 2.0)
    (STATE_DIR / f"{name}.pid").unlink(missing_ok=True)


def _signal(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # the process leads its own session:
            os.killpg(pid, sig)  # signalling the group reaches its children too


def _lab_netns_inodes() -> set[int]:
    inodes = set()
    for path in Path("/var/run/netns").glob(f"{PREFIX}*"):
        try:
            inodes.add(path.stat().st_ino)
        except OSError:
            continue
    return inodes


def stray_wireguard() -> list[int]:
    """Pids of wireguard-go processes running inside lab namespaces."""
    inodes = _lab_netns_inodes()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "wireguard-go":
                continue
            if (proc / "ns" / "net").stat().st_ino in inodes:
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def stop_all(grace: float = 5.0) -> None:
    """Stop every recorded lab process, then any stray wireguard-go in lab namespaces."""
    pids = [pid for name in recorded() if (pid := pid_of(name)) is not None]
    _signal(pids, signal.SIGTERM)
    _signal(_wait_gone(pids, grace), signal.SIGKILL)
    _wait_gone(pids, 2.0)
    for name in recorded():
        (STATE_DIR / f"{name}.pid").unlink(missing_ok=True)
    strays = stray_wireguard()
    for pid in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(strays, 2.0)
