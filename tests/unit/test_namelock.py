"""forwarder.namelock: the sweep spares what another live forwarder of the name made, and
sweeps what a dead one made (a real second process holds the lock and is killed)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from forwarder.namelock import NameLock
from forwarder.vwire import Leftover
from forwarder.vwire.naming import marker, parse_marker
from sdk.errors import FailedPrecondition

HOLD = (
    "import fcntl, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "fcntl.flock(fd, fcntl.LOCK_SH)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def made_by(owner: int | None) -> Leftover:
    return Leftover("/var/run/netns/x", "nsm0", "forwarder-n1/c1", "vw0", 1420, owner)


def test_a_marker_names_the_process_that_made_it() -> None:
    mine = parse_marker(marker("forwarder-n1/c1", "vw0"))
    assert mine is not None and (mine.connection_id, mine.wg_name, mine.owner) == (
        "forwarder-n1/c1", "vw0", os.getpid())
    local = parse_marker(marker("forwarder-n1/c 1 by=x", owner=42))
    assert local is not None and (local.connection_id, local.wg_name, local.owner) == (
        "forwarder-n1/c 1 by=x", None, 42)
    old = parse_marker("vwire:forwarder-n1/c1 wg=vw0")  # before markers named their process
    assert old is not None and (old.wg_name, old.owner) == ("vw0", None)


async def test_what_a_live_forwarder_of_the_name_made_is_spared_until_it_dies(
    tmp_path: Path,
) -> None:
    lock = NameLock("forwarder-n1", tmp_path)
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD, str(lock.path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 10) == b"held\n"
        lock.hold()
        assert lock.holders() == {os.getpid(), holder.pid}
        spare = lock.spare_others()
        assert spare(made_by(holder.pid))  # the other fabric's forwarder-n1
        assert not spare(made_by(os.getpid()))
        assert not spare(made_by(None))  # an older marker: swept as before
        assert NameLock("forwarder-n2", tmp_path).holders() == set()  # another name
        holder.kill()
        await asyncio.wait_for(holder.wait(), 10)
        assert lock.holders() == {os.getpid()}
        assert not lock.spare_others()(made_by(holder.pid))  # dead: its leftovers are swept
        assert lock.spare_all_but_mine(made_by(holder.pid))  # at stop only our own go
        assert not lock.spare_all_but_mine(made_by(os.getpid()))
    finally:
        lock.release()
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
    assert lock.holders() == set()


async def test_an_unusable_directory_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(FailedPrecondition, match=str(blocker)):
        NameLock("forwarder-n1", blocker / "locks").hold()
