"""What a wireguard-go daemon that ended tells (forwarder.wireguard.process): its last lines,
verbose ones included, and how it ended — real daemons in a test namespace, ended the three ways
seen: its tunnel device deleted, SIGTERM, its socket file touched. Before, the tail held only
non-verbose lines: every one of these read "no output"."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from forwarder.wireguard.process import WgGoProcess
from tests.privileged.conftest import netns_path, run

Ending = Callable[[WgGoProcess, str], Awaitable[None]]
#: Seconds from "UAPI listener started" until wireguard-go surely handles SIGTERM itself.
SIGNAL_SETTLE = 0.2


async def delete_device(process: WgGoProcess, ns: str) -> None:
    run("ip", "link", "del", process.ifname, netns=ns)


async def sigterm(process: WgGoProcess, ns: str) -> None:
    assert process.pid is not None
    # wireguard-go asks for SIGTERM (signal.Notify) only after it printed "UAPI listener
    # started": a SIGTERM in between kills it by the signal (-15) instead of its clean exit.
    await asyncio.sleep(SIGNAL_SETTLE)
    os.kill(process.pid, signal.SIGTERM)


async def touch_socket(process: WgGoProcess, ns: str) -> None:
    os.utime(process.socket)  # an attribute change of the socket file ends the daemon


@pytest.mark.parametrize(("end", "reason"), [
    (delete_device, "its tunnel device was deleted"),
    (sigterm, "a signal, or its UAPI listener failed"),
    (touch_socket, "a signal, or its UAPI listener failed"),
], ids=["device-deleted", "sigterm", "socket-touched"])
async def test_an_ended_daemon_reports_its_last_lines_and_how_it_ended(
    netns: Callable[[str], str], end: Ending, reason: str
) -> None:
    ns = netns("wgexit")
    process = WgGoProcess(f"vwx{secrets.token_hex(4)}", netns_path(ns))
    await process.start()
    try:
        assert process.exit_reason() == "running"
        await end(process, ns)
        code = await asyncio.wait_for(process.wait(), 10)
    finally:
        await process.stop()
    assert code == 0
    tail = process.output_tail()
    assert process.exit_reason() in tail and reason in tail, tail
    assert "Device closing" in tail and "Shutting down" in tail, tail  # verbose lines
    assert "DEBUG" not in tail and f"({process.ifname})" not in tail, tail  # shortened
    assert not Path(process.socket).exists()


async def test_a_killed_daemon_reports_the_signal(netns: Callable[[str], str]) -> None:
    process = WgGoProcess(f"vwx{secrets.token_hex(4)}", netns_path(netns("wgexit")))
    await process.start()
    try:
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        assert await asyncio.wait_for(process.wait(), 10) == -signal.SIGKILL
    finally:
        await process.stop()
    assert process.output_tail().startswith("killed by signal 9; last lines: ")
    assert "UAPI listener started" in process.output_tail()
