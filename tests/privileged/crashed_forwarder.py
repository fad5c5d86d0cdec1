"""A forwarder's WireGuard backend in a child process, killed with SIGKILL once it made one
device (and, with ``retire``, kept its daemon): what a crashed forwarder leaves for its successor.

:func:`crashed_forwarder` yields the pid of the daemon it left and the name of the device's TUN
in the overlay (the kept name when retired). Nothing the daemon prints fails while nobody reads
it, so it runs on until something ends it; the helper ends it if the test did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

SCRIPT = """
import asyncio, sys
from forwarder.vwire.naming import marker
from forwarder.wireguard import UserspaceBackend, generate_keypair

async def main(underlay, overlay, name, retire):
    be = UserspaceBackend(tun_in_netns=True, reuse=2)
    private, _ = generate_keypair()
    await be.create(name, underlay, private, 52799, mtu=1380, netns=overlay,
                    alias=marker("crashed/1", name))
    if retire == "retire":
        await be.retire(name, overlay, name)
        kept = be.retired.items()[0]
        print("MADE", kept.process.pid, kept.idle_name, flush=True)
    else:
        print("MADE", be.pid(name), name, flush=True)
    await asyncio.sleep(60)

asyncio.run(main(*sys.argv[1:5]))
"""


@contextlib.asynccontextmanager
async def crashed_forwarder(underlay: str, overlay: str, name: str,
                            retire: bool = False) -> AsyncIterator[tuple[int, str]]:
    """(daemon pid, TUN name) left by a forwarder killed after it made device ``name`` in
    ``underlay`` (namespace paths) with its TUN in ``overlay``, marked as connection
    ``crashed/1``'s; with ``retire``, after it kept that daemon."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRIPT, underlay, overlay, name, "retire" if retire else "serve",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        cwd=str(Path(__file__).resolve().parents[2]))
    daemon = None
    try:
        assert child.stdout is not None
        async with asyncio.timeout(30):
            while not (line := (await child.stdout.readline()).decode()).startswith("MADE"):
                assert line, "the forwarder ended before it made its device"
        _, pid_text, tun = line.split()
        daemon = int(pid_text)
    finally:
        child.kill()
        await child.wait()
        if daemon is None:  # it never said: end whatever it started
            await asyncio.to_thread(subprocess.run, ["pkill", "-f", f"wireguard-go -f {name}"])
    try:
        yield daemon, tun
    finally:
        with contextlib.suppress(OSError):  # ended already (its pid maybe another's now)
            if Path(f"/proc/{daemon}/comm").read_text().strip() == "wireguard-go":
                os.kill(daemon, signal.SIGKILL)
