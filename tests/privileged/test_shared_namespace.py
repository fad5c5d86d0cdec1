"""The shared devices' namespace on the real kernel: held by the forwarder process alone (no
name, no mount), made with its sysctls, and gone with its holder — let go of, or killed — with
every device in it (a veth's other end in a workload namespace too)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from forwarder.kernel import real_kernel
from forwarder.kernel.sysctl import in_namespace
from forwarder.shared.devices import SYSCTLS
from sdk.errors import FailedPrecondition

pytestmark = pytest.mark.privileged
WORKLOAD = "vwt-shns-w"


def _read(key: str) -> str:
    return Path("/proc/sys/" + key.replace(".", "/")).read_text().strip()


def _links(netns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", netns, "-o", "link", "show"], check=True,
                         capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def _wait_gone(netns: str, name: str) -> bool:
    deadline = time.monotonic() + 10  # the kernel removes a namespace's devices asynchronously
    while time.monotonic() < deadline:
        if name not in _links(netns):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def workload() -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", WORKLOAD], check=True)
    try:
        yield WORKLOAD
    finally:
        subprocess.run(["ip", "netns", "delete", WORKLOAD], check=False)


async def test_a_held_namespace_has_its_sysctls_and_ends_when_let_go(workload: str) -> None:
    kernel = real_kernel()
    path = await kernel.create_namespace(SYSCTLS)
    assert path.startswith(f"/proc/{os.getpid()}/fd/")
    assert not any(name.startswith("vwsh") for name in os.listdir("/var/run/netns"))
    for key, value in SYSCTLS.items():
        assert await in_namespace(path, lambda k=key: _read(k)) == value  # type: ignore[misc]
    assert (await kernel.get_link(path, "lo")).up
    await kernel.create_veth("vwtsh0", path, "vwtsh1", f"/var/run/netns/{workload}")
    assert "vwtsh1" in _links(workload)
    await kernel.delete_namespace(path)
    await kernel.delete_namespace(path)  # again: nothing to do
    assert _wait_gone(workload, "vwtsh1"), "the veth's other end outlived the namespace"


async def test_a_failed_sysctl_leaves_nothing_held() -> None:
    kernel = real_kernel()
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(FailedPrecondition, match=r"net\.ipv4\.no_such_setting"):
        await kernel.create_namespace({"net.ipv4.no_such_setting": "1"})
    assert set(os.listdir("/proc/self/fd")) <= before


def test_a_killed_holder_takes_its_namespace_along(workload: str) -> None:
    """What a forwarder that dies leaves behind: nothing (no sweep needed)."""
    script = (
        "import asyncio, sys\n"
        "from forwarder.kernel import real_kernel\n"
        "async def main():\n"
        "    k = real_kernel()\n"
        "    path = await k.create_namespace({})\n"
        f"    await k.create_veth('vwtsh2', path, 'vwtsh3', '/var/run/netns/{workload}')\n"
        "    print('ready', flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parents[2])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert "vwtsh3" in _links(workload)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert _wait_gone(workload, "vwtsh3")
    finally:
        holder.kill()
        holder.wait(10)
