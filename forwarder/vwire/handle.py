"""The handle of a programmed vWire side: close it, read its counters.

A :class:`VWire` is returned by ``program_local``/``program_remote`` (and ``adopt``). Its
:class:`~forwarder.vwire.undo.UndoLog` holds what must be removed; ``close`` unwinds it and is
idempotent. ``metrics`` reads the counters of every interface as strings for a PathSegment's
``metrics`` map: ``<role>_rx_bytes``, ``<role>_tx_bytes``, ``<role>_rx_packets``,
``<role>_tx_packets`` per end (counted from when this vWire got the interface: a kept one's
counters, which the kernel cannot reset, start at ``baselines``, until they are found lower than
it: a new interface under that name, e.g. a restarted daemon's), ``mtu``, plus whatever the
remote side adds (WireGuard handshake).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import astuple, dataclass

from forwarder.kernel import KernelPort, LinkStats, Netns
from forwarder.wireguard import WgPeer

from .undo import UndoLog

ExtraMetrics = Callable[[], Awaitable[dict[str, str]]]
_ZERO = LinkStats(0, 0, 0, 0)


@dataclass(frozen=True)
class End:
    """One interface of a vWire: its role (client, endpoint, wireguard), namespace and name."""

    role: str
    netns: Netns
    ifname: str


class VWire:
    """A programmed vWire side (see module docstring)."""

    def __init__(
        self,
        kernel: KernelPort,
        connection_id: str,
        mtu: int,
        ends: tuple[End, ...],
        *,
        listen_port: int | None = None,
        extra_metrics: ExtraMetrics | None = None,
    ) -> None:
        self.kernel = kernel
        self.connection_id = connection_id
        self.mtu = mtu
        self.ends = ends
        self.listen_port = listen_port  # WireGuard UDP port (remote sides only)
        self.wireguard: tuple[str, WgPeer] | None = None  # remote sides: (device, its peer)
        self.space: int | None = None  # over a shared device: its address space
        self.undo = UndoLog()
        self.extra_metrics = extra_metrics
        self.baselines: dict[End, LinkStats] = {}  # counters an end had when this vWire got it

    @property
    def closed(self) -> bool:
        """True once everything created was removed."""
        return len(self.undo) == 0

    async def close(self) -> None:
        """Remove everything this vWire created; safe to call again (retries what failed)."""
        await self.undo.unwind()

    async def metrics(self) -> dict[str, str]:
        """Counters of every end (and the tunnel), as strings; read concurrently (the ends'
        from the kernel, the tunnel's from its data plane)."""
        ends = asyncio.gather(*(self.kernel.link_stats(e.netns, e.ifname) for e in self.ends))
        extra = self.extra_metrics() if self.extra_metrics is not None else _nothing()
        found, tunnel = await asyncio.gather(ends, extra)
        result = {"mtu": str(self.mtu)}
        for end, stats in zip(self.ends, found, strict=True):
            base = self.baselines.get(end, _ZERO)
            if any(now < then for now, then in zip(astuple(stats), astuple(base), strict=True)):
                del self.baselines[end]  # counting from 0 again: a new interface (a restart's)
                base = _ZERO
            result[f"{end.role}_rx_bytes"] = str(stats.rx_bytes - base.rx_bytes)
            result[f"{end.role}_tx_bytes"] = str(stats.tx_bytes - base.tx_bytes)
            result[f"{end.role}_rx_packets"] = str(stats.rx_packets - base.rx_packets)
            result[f"{end.role}_tx_packets"] = str(stats.tx_packets - base.tx_packets)
        result.update(tunnel)
        return result


async def _nothing() -> dict[str, str]:
    return {}

async def program_or_rollback(vwire: VWire, steps: Callable[[], Awaitable[None]]) -> VWire:
    """Run ``steps`` (which push their undo actions on ``vwire.undo``); on any failure (or
    cancellation) unwind what was done and re-raise, so nothing half-applied is left."""
    try:
        await steps()
    except BaseException as err:
        try:
            await vwire.close()
        except Exception as cleanup:  # report both: the cause and what could not be undone
            err.add_note(f"rollback incomplete: {cleanup}")
        raise
    return vwire
