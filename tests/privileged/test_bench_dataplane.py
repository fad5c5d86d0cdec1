"""bench.dataplane's shared-device rows with real parts (namespaces ``vwt-<pid>-<role>``,
wireguard-go, iperf3): each row moves traffic over the two nodes' one shared device pair at the
computed MTU, and when the rows end nothing of them is left — no wireguard-go started for
them, no shared namespace held, no namespace of the topology."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from bench.dataplane import Config, Results, build, shared_rows, teardown
from forwarder.kernel import real_kernel
from forwarder.wireguard import detect_backend
from tests.privileged.conftest import NETNS_PREFIX

pytestmark = [pytest.mark.privileged, pytest.mark.timeout(120)]


def _netns_fds() -> set[str]:
    """This process's open file descriptors that hold a network namespace."""
    held = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith("net:["):
                held.add(fd.name)
    return held


def _wireguard_go_children() -> list[int]:
    """wireguard-go processes whose parent is this process (what the backend started)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)
            name = fields[0].split("(", 1)[1]
            state, ppid = fields[1].split()[:2]
            if name == "wireguard-go" and int(ppid) == os.getpid() and state != "Z":
                found.append(int(stat.parent.name))
    return found


async def test_the_shared_rows_move_traffic_and_leave_nothing() -> None:
    held_before, daemons_before = _netns_fds(), _wireguard_go_children()
    kernel = real_kernel()
    backend = await detect_backend()
    topo = await build(aggregate=2, prefix=NETNS_PREFIX)
    results = Results()
    try:
        async with contextlib.AsyncExitStack() as stack:
            rows = await shared_rows(stack, topo, kernel, backend,
                                     Config(seconds=1, aggregate=2), results)
            assert set(rows) == {"remote_vwire_shared", "remote_vwire_shared_aggregate"}
            assert len(_netns_fds() - held_before) == 2  # each node's shared namespace
            assert len(_wireguard_go_children()) - len(daemons_before) == 2  # one per node
            for row, measure in rows.items():
                assert await measure() > 0.01, row
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            await close()
        await teardown(topo)
    assert results.mtus == {"remote_vwire_shared": 1440, "remote_vwire_shared_aggregate": 1440}
    assert _netns_fds() == held_before
    assert _wireguard_go_children() == daemons_before
    assert not [n for n in topo.names.values() if (Path("/var/run/netns") / n).exists()]
