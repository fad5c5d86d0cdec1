"""A namespace that disappears while a forwarder's sweep looks into it is passed over.

The start and stop sweeps (vWire leftovers, pooled wireguard-go TUNs) list every namespace of the
host, then open each. ``ip netns delete`` unmounts a namespace before it unlinks its file, so a
namespace listed a moment ago can be a plain file when the sweep opens it: that made a forwarder
fail to start ("... is not a network namespace file") while another fabric was going down. The
kernel here is the real one; only its listing adds such a file, as it was seen mid-deletion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from forwarder.kernel import KernelPort, real_kernel
from forwarder.vwire.sweep import find_leftovers, sweep
from forwarder.wireguard.pool import DevicePool
from forwarder.wireguard.process import WgGoProcess

pytestmark = pytest.mark.privileged


class _ListsAVanishedNamespace:
    """The real kernel port, whose namespace listing also names ``vanished``."""

    def __init__(self, kernel: KernelPort, vanished: Path) -> None:
        self._kernel = kernel
        self._vanished = str(vanished)

    async def list_namespaces(self) -> list[str]:
        return [*await self._kernel.list_namespaces(), self._vanished]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kernel, name)


@pytest.fixture
def kernel(tmp_path: Path) -> Any:
    unmounted = tmp_path / "going"  # what /var/run/netns/NAME is between umount and unlink
    unmounted.write_bytes(b"")
    return _ListsAVanishedNamespace(real_kernel(), unmounted)


async def test_the_leftover_sweep_passes_over_a_namespace_being_deleted(kernel: Any) -> None:
    found = await find_leftovers(kernel)
    assert all(item.netns != kernel._vanished for item in found)
    removed = await sweep(kernel, owner="vwt-no-such-forwarder")
    assert removed == []


async def test_the_pool_sweep_passes_over_a_namespace_being_deleted(
    kernel: Any, tmp_path: Path
) -> None:
    def never_started(ifname: str, netns: str | None) -> WgGoProcess:
        raise AssertionError("the sweep starts no daemon")

    pool = DevicePool(1, kernel, never_started, socket_dir=tmp_path, namespaces=2)
    assert await pool.sweep(None) == []
