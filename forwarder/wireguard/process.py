"""One wireguard-go daemon: start it in a namespace, wait for its UAPI socket, stop it.

Contract:
- :meth:`WgGoProcess.start` first claims an inotify instance from ``budget`` (each daemon
  holds one; :class:`ResourceExhausted` with the limit and the fix when none is left, before
  anything runs), then runs ``wireguard-go -f IFNAME`` inside the underlay namespace
  (``nsenter --net=PATH``, which execs in place: the pid we hold is the daemon's) and waits,
  without polling, for its "UAPI listener started" line (printed once the socket listens),
  with a deadline. If the daemon exits or the deadline passes it is killed and
  :class:`DataplaneError` carries the tail of its output; an exit for lack of inotify
  instances ("too many open files") is :class:`ResourceExhausted` with the same advice.
- :meth:`WgGoProcess.stop` sends SIGTERM, waits ``stop_timeout``, then SIGKILL; afterwards a stale
  socket (SIGKILL leaves one; connecting gives ECONNREFUSED) is unlinked. Idempotent.
- :func:`clear_stale_socket` unlinks a socket nobody listens on and reports a live one;
  :func:`clear_sockets_of_ending` does so for daemons about to end (their TUNs just deleted),
  waiting for them at most ``within`` seconds in all, and names the sockets still answered.
- The daemon's output is read continuously (a full pipe would block it) and logged at debug;
  its last ``TAIL_LINES`` lines, verbose ("DEBUG: ") ones included, are kept for exit and error
  reports (:meth:`WgGoProcess.output_tail`), without the goroutine start/stop lines (all but the
  TUN reader's) and without the interface name and date each line repeats. How a daemon ended
  shows only in verbose lines; :meth:`WgGoProcess.exit_reason` reads it from them: its TUN
  reader stopping before "Device closing" with no error line means its tunnel device was
  deleted (wireguard-go reports that read error as a plain close), "Device closing" first means
  a signal or its UAPI listener failing (e.g. its socket file removed or changed). It never
  contains keys.
- The daemon runs with ``LOG_LEVEL=verbose`` so that its "MTU updated: N" lines tell which MTU
  it pads packets to: it learns a new MTU from the link's netlink event and reads it by
  interface name in its own namespace, so it must have seen the MTU before the link moves to
  another namespace. :meth:`WgGoProcess.wait_mtu` waits (bounded) until it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
from collections import deque
from pathlib import Path

import structlog

from sdk.errors import DataplaneError, ResourceExhausted

from .inotify import DEFAULT_BUDGET, InotifyBudget, exhausted_message, instances_in_use, read_limit
from .netns import netns_argv
from .uapi import SOCKET_DIR, socket_path

log = structlog.get_logger()

WIREGUARD_GO = "wireguard-go"
_LISTENING = "UAPI listener started"
_NO_INOTIFY = "too many open files"
_BANNER = ("\u250c", "\u2502", "\u2514")  # wireguard-go's boxed "kernel has WireGuard" notice
_MTU_UPDATED = re.compile(r"MTU updated: (\d+)")
#: How many of a daemon's last output lines are kept for exit and error reports.
TAIL_LINES = 12
#: Goroutine start/stop lines, kept out of the tail (the TUN reader's tell how a daemon ended).
_ROUTINE = re.compile(r"Routine: (?!TUN reader)|\) - Routine: ")
#: "(ifname) 2026/12/05 " at the start of each line.
_PREFIX = re.compile(r"^\([^)]*\) \d{4}/\d\d/\d\d ")
_TUN_STOPPED = "Routine: TUN reader - stopped"
_CLOSING = "Device closing"
#: The MTU wireguard-go gives the TUN it creates (it logs no update for it).
WIREGUARD_GO_MTU = 1420
#: Seconds to wait for the daemons of TUNs just deleted to end, to unlink their sockets.
SOCKET_GRACE = 2.0


def _short(line: str) -> str:
    """``line`` without its "DEBUG: " and the "(ifname) date " every line repeats."""
    level, sep, rest = line.partition(": ")
    if sep and level in ("DEBUG", "ERROR"):
        short = _PREFIX.sub("", rest)
        return short if level == "DEBUG" else f"ERROR: {short}"
    return _PREFIX.sub("", line)


def clear_stale_socket(path: Path) -> bool:
    """Unlink ``path`` if it is a socket nobody listens on; True if nothing is (now) there.

    Returns False when a live daemon answers on it.
    """
    if not path.exists():
        return True
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        log.info("wireguard_stale_socket_removed", socket=str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()
    return False


async def clear_sockets_of_ending(paths: list[Path], within: float) -> list[Path]:
    """:func:`clear_stale_socket` for each of ``paths``, retried while its daemon, which ends
    with its TUN a moment after the TUN is deleted, still answers; at most ``within`` seconds in
    all. Returns the paths still answered on then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    live = []
    for path in paths:
        while not clear_stale_socket(path):
            if loop.time() >= deadline:
                live.append(path)
                break
            await asyncio.sleep(0.01)  # bounded by the deadline
    return live


class WgGoProcess:
    """A wireguard-go daemon for ``ifname`` whose TUN is made in ``netns``."""

    def __init__(
        self,
        ifname: str,
        netns: str | None,
        *,
        binary: str = WIREGUARD_GO,
        socket_dir: Path = SOCKET_DIR,
        start_timeout: float = 5.0,
        stop_timeout: float = 3.0,
        budget: InotifyBudget = DEFAULT_BUDGET,
    ) -> None:
        self.ifname = ifname
        self.budget = budget
        self.netns = netns
        self.binary = binary
        self.socket = socket_path(ifname, socket_dir)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.output: deque[str] = deque(maxlen=TAIL_LINES)
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.mtu = WIREGUARD_GO_MTU  #: the MTU the daemon last reported using
        self._mtu_seen = asyncio.Event()
        self._listening = asyncio.Event()

    async def wait_mtu(self, mtu: int, timeout: float = 2.0) -> bool:
        """Wait until the daemon reports using ``mtu`` (see the module docstring); False when
        it has not within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.mtu != mtu:
            self._mtu_seen.clear()
            left = deadline - loop.time()
            if left <= 0 or self.returncode is not None:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._mtu_seen.wait(), left)
        return True

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    def output_tail(self) -> str:
        """The daemon's last output lines (module docstring); once it has exited, led by
        :meth:`exit_reason`."""
        tail = " | ".join(self.output)
        if self.returncode is None:
            return tail
        return f"{self.exit_reason()}; last lines: {tail or 'none'}"

    def exit_reason(self) -> str:
        """How the daemon ended, as far as its exit status and output tell (module docstring)."""
        code = self.returncode
        if code is None:
            return "running"
        if code < 0:
            return f"killed by signal {-code}"
        lines = list(self.output)
        errors = [line for line in lines if line.startswith("ERROR: ")]
        if errors:
            return f"its last error: {errors[-1].removeprefix('ERROR: ')}"
        closing = next((i for i, line in enumerate(lines) if _CLOSING in line), None)
        if closing is None:
            return f"exit status {code}, no reason in its output"
        if any(_TUN_STOPPED in line for line in lines[:closing]):
            return "its tunnel device was deleted (the TUN reader stopped first, no error)"
        return "a signal, or its UAPI listener failed (its socket file removed or changed)"

    async def start(self, tun_fd: int | None = None) -> float:
        """Spawn the daemon and wait for its socket; returns seconds until the socket appeared.
        ``tun_fd``: the daemon takes this open TUN device (``WG_TUN_FD``) instead of making one;
        the caller keeps its own descriptor and closes it."""
        env = dict(os.environ, LOG_LEVEL="verbose",
                   WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1")
        if tun_fd is not None:
            env["WG_TUN_FD"] = str(tun_fd)
        self.mtu = WIREGUARD_GO_MTU
        self._listening.clear()
        await self.budget.claim(self)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *netns_argv(self.netns),
                self.binary,
                "-f",
                self.ifname,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
                pass_fds=() if tun_fd is None else (tun_fd,),
            )
        except OSError as exc:
            raise DataplaneError(f"cannot run {self.binary} for {self.ifname}: {exc}") from None
        self._reader = asyncio.create_task(self._read_output(), name=f"wg-output-{self.ifname}")
        try:
            await self._wait_for_socket(started + self.start_timeout)
        except BaseException:
            await self.stop()
            raise
        elapsed = loop.time() - started
        log.info(
            "wireguard_go_started",
            ifname=self.ifname,
            pid=self.pid,
            netns=self.netns,
            socket_ms=round(elapsed * 1000, 1),
        )
        return elapsed

    async def _wait_for_socket(self, deadline: float) -> None:
        assert self._proc is not None
        listening = asyncio.ensure_future(self._listening.wait())
        exited = asyncio.ensure_future(self._proc.wait())
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            await asyncio.wait((listening, exited), timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            listening.cancel()
            exited.cancel()
        if self._listening.is_set():
            return
        if self._proc.returncode is None:
            raise DataplaneError(
                f"wireguard-go for {self.ifname} did not open {self.socket} within "
                f"{self.start_timeout} s: {self.output_tail() or 'no output'}"
            )
        await self._drain_output()
        tail = self.output_tail()
        if _NO_INOTIFY in tail.lower():
            raise ResourceExhausted(exhausted_message(read_limit(), instances_in_use()))
        raise DataplaneError(
            f"wireguard-go for {self.ifname} exited with {self._proc.returncode} before "
            f"opening its UAPI socket: {tail or 'no output'}"
        )

    async def _read_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        # Bound once: a line costs no logger construction (and nothing below debug level).
        debug = log.bind(ifname=self.ifname).debug
        while line := await self._proc.stdout.readline():
            text = line.decode("utf-8", "replace").rstrip()
            if not text or text.startswith(_BANNER):
                continue
            if _LISTENING in text:
                self._listening.set()
            if (found := _MTU_UPDATED.search(text)) is not None:
                self.mtu = int(found.group(1))
                self._mtu_seen.set()
            debug("wireguard_go_output", line=text)
            if _ROUTINE.search(text) is None:
                self.output.append(_short(text))

    async def _drain_output(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 1.0)

    async def wait(self) -> int:
        """Wait until the daemon exits; its return code."""
        assert self._proc is not None
        code = await self._proc.wait()
        await self._drain_output()
        return code

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout``; unlink a stale socket. Idempotent."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.stop_timeout)
            except TimeoutError:
                log.warning("wireguard_go_kill", ifname=self.ifname, pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        clear_stale_socket(self.socket)
