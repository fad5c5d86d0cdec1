"""A fabric's processes: started detached, logged to files, found again by their pid files.

:class:`Processes` keeps, per process name, ``<state_dir>/<name>.pid``, ``<name>.cmd`` (its
command, so :meth:`Processes.restart` can start it again), ``<name>.log`` (stderr) and
``<name>.out`` (stdout). Every process leads its own session, so signalling its group reaches
its children too. A pid file whose pid now names a process started after the file was written
(the pid was reused) counts as no process: it is never signalled. :meth:`Processes.stop_all`
sends SIGTERM to every recorded process, waits a bounded time, SIGKILLs what is left, then
kills any ``wireguard-go`` still running inside the topology's namespaces (e.g. after a
forwarder was killed) and unlinks its stale UAPI socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from forwarder.wireguard import clear_stale_socket, socket_path
from lab.topology import Topology, netns_path
from sdk.errors import NotFound


def alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie does not count, unless other threads of it still run: a
    SIGKILLed process's main thread turns zombie first, and the descriptors (its listening
    sockets) close only with its last thread, so a restarted process must not be taken as
    listening meanwhile."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return False
    return state != "Z" or threads > 1


_PID_SLACK = 1.0  # seconds: the boot time in /proc/stat is whole seconds


def started_at(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), or None if it cannot be read."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def wait_gone(pids: Sequence[int], seconds: float) -> list[int]:
    """Wait (bounded) until none of ``pids`` runs; returns those still running."""
    deadline = time.monotonic() + seconds
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)  # polling for process exit, bounded by the deadline
        left = [p for p in left if alive(p)]
    return left


def signal_groups(pids: Sequence[int], sig: signal.Signals) -> None:
    """Send ``sig`` to the process group each pid leads."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


class Processes:
    """The processes of one topology (see the module docstring)."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.dir = topology.state_dir

    def _file(self, name: str, suffix: str) -> Path:
        return self.dir / f"{name}.{suffix}"

    def log(self, name: str) -> Path:
        return self._file(name, "log")

    def out(self, name: str) -> Path:
        return self._file(name, "out")

    def start(self, name: str, args: Sequence[str], netns: str | None = None) -> int:
        """Start ``python -m <args>`` (inside ``netns``) in the background; returns its pid."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._file(name, "cmd").write_text(json.dumps({"args": list(args), "netns": netns}))
        prefix = ["ip", "netns", "exec", netns] if netns else []
        with open(self.log(name), "ab") as log, open(self.out(name), "ab") as out:
            process = subprocess.Popen(
                [*prefix, sys.executable, "-m", *args],
                stdout=out,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._file(name, "pid").write_text(str(process.pid))
        return process.pid

    def restart(self, name: str) -> int:
        """Start a recorded process again with the same command (it must not be running)."""
        try:
            command = json.loads(self._file(name, "cmd").read_text())
        except (OSError, ValueError):
            raise NotFound(f"process {name!r} was never started in {self.dir}") from None
        self.stop(name)
        return self.start(name, command["args"], command["netns"])

    def pid_of(self, name: str) -> int | None:
        """The pid of a running process, or None. A pid whose process started after its pid
        file was written belongs to someone else now (pids wrap at ``kernel.pid_max``, 32768
        here, within minutes under load) and is never returned, so nothing is signalled by a
        stale file."""
        path = self._file(name, "pid")
        try:
            pid = int(path.read_text())
            written = path.stat().st_mtime
        except (OSError, ValueError):
            return None
        if not alive(pid):
            return None
        started = started_at(pid)
        if started is not None and started > written + _PID_SLACK:
            return None
        return pid

    def recorded(self) -> list[str]:
        """Names of every process recorded (running or not)."""
        if not self.dir.exists():
            return []
        return sorted(p.stem for p in self.dir.glob("*.pid"))

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL, wait: float = 5.0) -> int:
        """Send ``sig`` to a running process's group and wait (bounded) for it to end; returns
        its pid. NotFound if it does not run."""
        pid = self.pid_of(name)
        if pid is None:
            raise NotFound(f"process {name!r} is not running")
        signal_groups([pid], sig)
        wait_gone([pid], wait)
        return pid

    def stop(self, name: str, grace: float = 5.0) -> None:
        """Stop one process (SIGTERM, then SIGKILL after ``grace``); forget its pid."""
        pid = self.pid_of(name)
        if pid is not None:
            signal_groups([pid], signal.SIGTERM)
            signal_groups(wait_gone([pid], grace), signal.SIGKILL)
            wait_gone([pid], 2.0)
        self._file(name, "pid").unlink(missing_ok=True)

    def stop_all(self, grace: float = 5.0) -> None:
        """Stop every recorded process, then any stray wireguard-go in the namespaces."""
        pids = [pid for name in self.recorded() if (pid := self.pid_of(name)) is not None]
        signal_groups(pids, signal.SIGTERM)
        signal_groups(wait_gone(pids, grace), signal.SIGKILL)
        wait_gone(pids, 2.0)
        for name in self.recorded():
            self._file(name, "pid").unlink(missing_ok=True)
        self.kill_stray_wireguard()

    def stray_wireguard(self) -> dict[int, str]:
        """wireguard-go processes running inside the topology's namespaces: pid → interface."""
        inodes = set()
        for path in Path(netns_path("")).glob(f"{self.topology.prefix}*"):
            with contextlib.suppress(OSError):
                inodes.add(path.stat().st_ino)
        found: dict[int, str] = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if (proc / "comm").read_text().strip() != "wireguard-go":
                    continue
                if (proc / "ns" / "net").stat().st_ino in inodes:
                    argv = (proc / "cmdline").read_bytes().split(b"\0")
                    found[int(proc.name)] = argv[-2].decode() if len(argv) > 1 else ""
            except OSError:
                continue
        return found

    def kill_stray_wireguard(self) -> list[int]:
        """SIGKILL :meth:`stray_wireguard` and unlink their UAPI sockets; returns the pids."""
        strays = self.stray_wireguard()
        for pid in strays:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_gone(list(strays), 2.0)
        for ifname in strays.values():
            if ifname:
                clear_stale_socket(socket_path(ifname))
        return list(strays)


async def run_module(
    args: Sequence[str], *, stdin: str | None = None, timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <args>`` to completion (killed after ``timeout``); its captured output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate(stdin.encode() if stdin is not None else None)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return subprocess.CompletedProcess(list(args), process.returncode, out.decode(), err.decode())
