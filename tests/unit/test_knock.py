"""Knocking (forwarder.knock): the side that alone can open a tunnel re-adds its peer until the
far side's handshake shows in the counters, then stops; a close cancels it; it is bounded."""

from __future__ import annotations

import asyncio
import time

from forwarder.kernel import FakeKernel
from forwarder.knock import Knocker
from forwarder.wireguard import WgPeer, generate_keypair
from forwarder.wireguard.fake import FakeWireGuard
from forwarder.wireguard.model import WgPeerStats

_, PUBLIC = generate_keypair()
PEER = WgPeer(PUBLIC, ("100.64.2.11", 51820), ("10.0.0.2/32",), keepalive=25)


class SilentFarSide(FakeWireGuard):
    """A backend whose peer answers only after ``answer_after`` re-adds; counts them."""

    def __init__(self, kernel: FakeKernel, answer_after: int) -> None:
        super().__init__(kernel)
        self.answer_after = answer_after
        self.sets = 0
        self.answered = asyncio.Event()

    async def set_peer(self, ifname: str, peer: WgPeer) -> None:
        await super().set_peer(ifname, peer)
        self.sets += 1

    async def stats(self, ifname: str) -> list[WgPeerStats]:
        if self.sets > self.answer_after:  # the first set is programming, not a knock
            self.answered.set()
            return [WgPeerStats(k, 1, 1, time.time()) for k in self.peers[ifname]]
        return [WgPeerStats(k, 0, 148, None) for k in self.peers[ifname]]


async def _device(backend: FakeWireGuard) -> str:
    await backend.create("wg0", None, "", 51820)
    await backend.set_peer("wg0", PEER)
    return "wg0"


async def test_knocks_until_the_far_side_answers_then_stops() -> None:
    kernel = FakeKernel()
    backend = SilentFarSide(kernel, answer_after=3)
    knocker = Knocker(backend, interval=0.01, duration=5.0)
    knocker.start("c1", await _device(backend), PEER)
    await asyncio.wait_for(backend.answered.wait(), 5.0)
    await asyncio.wait_for(asyncio.gather(*knocker._tasks.values()), 5.0)
    assert backend.sets == 4  # programming + 3 knocks; none after the answer
    assert backend.peers["wg0"][PUBLIC] == PEER
    assert knocker._tasks == {}


async def test_knocking_is_bounded_and_cancelled_by_a_close() -> None:
    kernel = FakeKernel()
    backend = SilentFarSide(kernel, answer_after=10**6)
    knocker = Knocker(backend, interval=0.01, duration=0.2)
    knocker.start("c1", await _device(backend), PEER)
    await asyncio.wait_for(asyncio.gather(*knocker._tasks.values()), 5.0)  # gives up by itself
    assert 2 <= backend.sets <= 25
    knocker.start("c2", "wg0", PEER)
    knocker.cancel("c2")
    await knocker.stop()
    assert knocker._tasks == {}
