"""What a forwarder killed with SIGKILL left serving a vWire (a wireguard-go whose TUN is in the
workload's namespace, its shadow in the underlay, both marked with the connection) is removed by
its successor's leftover sweep, daemon and control socket included: a socket left behind would
show in ``wg show`` as an interface nobody answers for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from forwarder.kernel import real_kernel
from forwarder.vwire.sweep import sweep
from forwarder.wireguard import UserspaceBackend
from forwarder.wireguard.uapi import SOCKET_DIR
from tests.privileged.conftest import netns_path

from .crashed_forwarder import crashed_forwarder
from .test_wireguard_reuse import gone
from .test_wireguard_userspace import process_alive, sh, underlay, wg_name

__all__ = ["underlay"]

pytestmark = pytest.mark.privileged


async def test_the_sweep_ends_a_killed_forwarders_daemon_and_unlinks_its_socket(
    underlay: tuple[str, str], netns: Callable[[str], str],
) -> None:
    overlay, name = netns("ov"), wg_name()
    scope = [netns_path(underlay[0]), netns_path(overlay)]
    async with crashed_forwarder(scope[0], scope[1], name) as (daemon, tun):
        await asyncio.sleep(0.3)
        assert process_alive(daemon), "the daemon should outlive its forwarder until a sweep"
        assert tun in await sh("ip", "-o", "link", netns=overlay)
        successor = UserspaceBackend(tun_in_netns=True)
        try:
            removed = await sweep(real_kernel(), successor, namespaces=scope)
            assert [(x.connection_id, x.wg_name) for x in removed] == [("crashed/1", name)] * 2
            assert await gone(daemon), "its daemon ran on after its TUN was deleted"
            assert name not in await sh("ip", "-o", "link", netns=underlay[0])
            assert tun not in await sh("ip", "-o", "link", netns=overlay)
            assert not (SOCKET_DIR / f"{name}.sock").exists()
        finally:
            await successor.close()
