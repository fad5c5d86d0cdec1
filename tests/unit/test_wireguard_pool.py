"""DevicePool's refill logic on the fake kernel, with daemons whose start the test releases.

The real daemons are exercised in tests/privileged/test_forwarder_scale.py; here the order of
events is chosen by the test, which a real start cannot do.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from forwarder.kernel.fake import FakeKernel
from forwarder.wireguard.pool import DevicePool


class _GatedDaemon:
    """Stands in for WgGoProcess: its start makes its TUN once the test opens ``gate``."""

    def __init__(self, ifname: str, kernel: FakeKernel, gate: asyncio.Event) -> None:
        self.ifname = ifname
        self.returncode: int | None = None
        self._kernel = kernel
        self._gate = gate

    async def start(self) -> float:
        await self._gate.wait()
        self._kernel.add_link(None, self.ifname, "tun")
        return 0.0

    async def wait_mtu(self, mtu: int, timeout: float = 2.0) -> bool:
        return (await self._kernel.get_link(None, self.ifname)).mtu == mtu

    async def stop(self) -> None:
        if self.returncode is None:
            self.returncode = 0
            await self._kernel.delete_link(None, self.ifname)

    async def wait(self) -> int:
        await asyncio.Event().wait()
        return 0


async def test_an_mtu_change_during_a_refill_still_fills_the_pool_at_the_new_mtu(
    tmp_path: Path,
) -> None:
    kernel = FakeKernel()
    gate = asyncio.Event()
    made: list[_GatedDaemon] = []

    def start(ifname: str, _underlay: str | None) -> _GatedDaemon:
        made.append(_GatedDaemon(ifname, kernel, gate))
        return made[-1]

    pool = DevicePool(2, kernel, start, socket_dir=tmp_path)  # type: ignore[arg-type]
    try:
        assert await pool.take(None, 1380) is None  # empty: a refill at 1380 starts
        await asyncio.sleep(0)  # the refill is now starting its first daemon
        assert len(made) == 1
        assert await pool.take(None, 1400) is None  # the MTU changes while that start runs
        gate.set()
        await asyncio.wait_for(pool.filled(None), 5)
        assert pool.ready(None) == 2  # was 0: the refill ended on the daemon made at 1380
        ready = await pool.take(None, 1400)
        assert ready is not None
        assert (await kernel.get_link(None, ready.process.ifname)).mtu == 1400
        assert made[0].returncode == 0  # the one made at the old MTU was stopped
    finally:
        await pool.close()
    assert [link.name for link in await kernel.list_links(None)] == ["lo", ready.process.ifname]
