"""An in-memory WireGuard backend for tests, on top of :class:`forwarder.kernel.FakeKernel`.

:class:`FakeWireGuard` implements :class:`forwarder.wireguard.WireGuardBackend`: an interface is a
``tun`` link in the fake kernel, peers are remembered, stats report a recent handshake, and
``fail`` names a step (create, move, set_peer) that raises ``DataplaneError`` to test rollback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import replace

from forwarder.kernel import FakeKernel, LinkStats, Netns
from forwarder.wireguard.model import WgPeer, WgPeerStats
from sdk.errors import DataplaneError


class FakeWireGuard:
    """Stands in for a WireGuardBackend: a "tun" link in the fake kernel plus remembered peers."""

    kind = "fake"
    tun_in_netns = False

    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel
        self.where: dict[str, Netns] = {}
        self.peers: dict[str, dict[str, WgPeer]] = {}
        self.fail: str | None = None
        self.calls: list[tuple[str, str]] = []  # (step, interface)
        self.retired: list[tuple[str, str, str]] = []  # (interface, netns, its name there)
        self.reaped: list[str] = []
        self.baselines: dict[str, LinkStats] = {}

    def _maybe_fail(self, step: str, ifname: str = "") -> None:
        self.calls.append((step, ifname))
        if self.fail == step:
            raise DataplaneError(f"injected failure in wireguard {step}")

    async def create(
        self,
        ifname: str,
        underlay_netns: str | None,
        private_key: str,
        listen_port: int,
        mtu: int | None = None,
        netns: str | None = None,
        alias: str | None = None,
    ) -> int:
        self._maybe_fail("create")
        self.kernel.add_link(underlay_netns, ifname, "tun", mtu=1420)
        self.where[ifname] = underlay_netns
        self.peers[ifname] = {}
        return listen_port or 51999

    async def move(self, ifname: str, underlay_netns: str | None, target_netns: str) -> None:
        self._maybe_fail("move")
        await self.kernel.move_link(self.where[ifname], ifname, target_netns)
        self.where[ifname] = target_netns

    async def set_peer(self, ifname: str, peer: WgPeer) -> None:
        self._maybe_fail("set_peer", ifname)
        self.peers[ifname][peer.public_key] = peer

    async def add_allowed_ips(
        self, ifname: str, public_key: str, prefixes: tuple[str, ...]
    ) -> None:
        self._maybe_fail("add_allowed_ips", ifname)
        known = self.peers[ifname].get(public_key)
        if known is not None:
            self.peers[ifname][public_key] = replace(
                known, allowed_ips=tuple(dict.fromkeys(known.allowed_ips + prefixes)))

    async def remove_peer(self, ifname: str, public_key: str) -> None:
        self.peers[ifname].pop(public_key, None)

    async def stats(self, ifname: str) -> list[WgPeerStats]:
        self._maybe_fail("stats", ifname)
        await asyncio.sleep(0)  # a reading takes a turn of the loop, as a socket exchange does
        return [WgPeerStats(k, 5, 6, time.time() - 3) for k in self.peers[ifname]]

    async def retire(self, ifname: str, netns: str, current: str) -> None:
        """Recorded in ``retired``, then deleted."""
        self.retired.append((ifname, netns, current))
        await self.delete(ifname)

    async def reap(self, ifnames: Collection[str]) -> None:
        """Recorded in ``reaped``: a fake device leaves nothing behind its links."""
        self.reaped += ifnames

    def baseline(self, ifname: str) -> LinkStats | None:
        """From ``baselines`` (tests set them)."""
        return self.baselines.get(ifname)

    async def delete(self, ifname: str) -> None:
        # Like stopping wireguard-go: the TUN goes away whatever it is called now.
        if ifname not in self.where:
            return
        netns = self.where.pop(ifname)
        self.peers.pop(ifname, None)
        for link in await self.kernel.list_links(netns):
            if link.name == ifname or (link.alias or "").endswith(f"wg={ifname}"):
                await self.kernel.delete_link(netns, link.name)
