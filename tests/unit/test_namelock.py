"""forwarder.namelock: a forwarder sweeps only when no other live forwarder of its name holds the
lock; a holder that dies releases it (a real second process holds and is killed)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from forwarder.namelock import NameLock
from sdk.errors import FailedPrecondition

HOLD = (
    "import fcntl, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "fcntl.flock(fd, fcntl.LOCK_SH)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


async def test_alone_it_may_sweep_and_later_ones_of_the_name_may_not(tmp_path: Path) -> None:
    first, second = NameLock("forwarder-n1", tmp_path), NameLock("forwarder-n1", tmp_path)
    other = NameLock("forwarder-n2", tmp_path)
    try:
        assert await first.acquire()
        with pytest.raises(FailedPrecondition, match="held it exclusively"):
            await second.acquire(wait=0.1)  # the first one is sweeping (exclusive)
        await first.share()
        assert not await second.acquire()  # the first one runs: sweep nothing
        assert await other.acquire()  # another name is another lock
        assert not first.sole()  # at stop: the second one still runs
        second.release()
        third = NameLock("forwarder-n1", tmp_path)
        assert await third.acquire()  # nobody of the name runs any more
        third.release()
    finally:
        for lock in (first, second, other):
            lock.release()


async def test_a_dead_holder_releases_the_name(tmp_path: Path) -> None:
    lock = NameLock("forwarder-n1", tmp_path)
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD, str(lock.path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 10) == b"held\n"
        assert not await lock.acquire()
        lock.release()
        holder.kill()
        await asyncio.wait_for(holder.wait(), 10)
        assert await lock.acquire()  # the killed forwarder's leftovers are this one's to sweep
        assert lock.sole()
    finally:
        lock.release()
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_an_unusable_directory_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FailedPrecondition, match=str(blocker)):
        await NameLock("forwarder-n1", blocker / "locks").acquire()
