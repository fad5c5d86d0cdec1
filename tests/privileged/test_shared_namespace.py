"""The shared devices' namespace on the real kernel: made with its sysctls, refused twice,
removed idempotently, and what a dead run of the same forwarder left is removed at start while
a live one's is kept."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forwarder.kernel import real_kernel
from forwarder.kernel.sysctl import in_namespace
from forwarder.ports import PortPool
from forwarder.shared import SharedDevices
from forwarder.shared.devices import SYSCTLS, namespace_name
from sdk.errors import AlreadyExists, FailedPrecondition, InvalidArgument

pytestmark = pytest.mark.privileged
PREFIX = "vwt-shns"


def _read(key: str) -> str:
    return Path("/proc/sys/" + key.replace(".", "/")).read_text().strip()


def _ip_netns() -> set[str]:
    return {line.split()[0] for line in subprocess.run(
        ["ip", "netns", "list"], check=True, capture_output=True, text=True).stdout.splitlines()}


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


async def test_a_namespace_is_made_with_its_sysctls_and_removed(cleanup: list[str]) -> None:
    kernel = real_kernel()
    name = f"{PREFIX}-{os.getpid()}"
    cleanup.append(name)
    path = await kernel.create_namespace(name, SYSCTLS)
    assert path == f"/var/run/netns/{name}" and name in _ip_netns()
    for key, value in SYSCTLS.items():
        assert await in_namespace(path, lambda k=key: _read(k)) == value  # type: ignore[misc]
    assert (await kernel.get_link(path, "lo")).up
    with pytest.raises(AlreadyExists):
        await kernel.create_namespace(name, {})
    await kernel.delete_namespace(path)
    assert name not in _ip_netns()
    await kernel.delete_namespace(path)  # again: nothing to do
    with pytest.raises(InvalidArgument, match="namespace"):
        await kernel.create_namespace("../etc", {})
    with pytest.raises(InvalidArgument, match="not a named namespace"):
        await kernel.delete_namespace("/proc/1/ns/net")


async def test_a_failed_sysctl_leaves_no_namespace(cleanup: list[str]) -> None:
    name = f"{PREFIX}-bad-{os.getpid()}"
    cleanup.append(name)
    with pytest.raises(FailedPrecondition, match=r"net\.ipv4\.no_such_setting"):
        await real_kernel().create_namespace(name, {"net.ipv4.no_such_setting": "1"})
    assert name not in _ip_netns()


async def test_start_removes_dead_runs_and_keeps_live_ones(cleanup: list[str]) -> None:
    forwarder = f"{PREFIX}-fwd-{os.getpid()}"
    dead, live = namespace_name(forwarder, 999_999_001), namespace_name(forwarder, 999_999_002)
    cleanup += [dead, live, namespace_name(forwarder, os.getpid())]
    kernel = real_kernel()
    for name in (dead, live):
        await kernel.create_namespace(name, {})
    backend: Any = None  # no device is made
    devices = SharedDevices(kernel, backend, PortPool(range(51820, 51821)), forwarder)
    removed = await devices.start(alive=lambda pid: pid == 999_999_002)
    assert removed == [f"/var/run/netns/{dead}"]
    names = _ip_netns()
    assert dead not in names and live in names
    assert namespace_name(forwarder, os.getpid()) in names
    assert devices.netns == f"/var/run/netns/{namespace_name(forwarder, os.getpid())}"
    await devices.stop()
    assert namespace_name(forwarder, os.getpid()) not in _ip_netns()
