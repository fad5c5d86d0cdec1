"""Per-vWire Prometheus metrics of a forwarder: bytes and packets of every end, MTU, handshake.

Reading counters means netlink and UAPI calls, which belong to the event loop, while Prometheus
collects from its HTTP thread; so :class:`VWireMetrics` keeps a snapshot that :meth:`refresh`
renews (the forwarder does so every few seconds while it serves metrics) and the collector
reports the snapshot: series exist only for the vWires alive at the last refresh, so the label
``connection`` (the forwarder's connection id) stays bounded by the node's live connections.

Metrics: ``vwire_vwire_bytes_total`` and ``vwire_vwire_packets_total`` (labels ``connection``,
``side`` — client, endpoint or wireguard — and ``direction`` — rx, tx), ``vwire_vwire_mtu_bytes``,
``vwire_vwire_handshake_age_seconds`` (tunnels after their first handshake),
``vwire_vwire_info`` (a tunnel's WireGuard endpoint, as a label) and
``vwire_vwire_metrics_age_seconds`` (how old the snapshot is).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_log = structlog.get_logger("forwarder.metrics")

ReadCounters = Callable[[], Awaitable[dict[str, dict[str, str]]]]
_COUNTER = re.compile(r"^(?P<side>[a-z]+)_(?P<direction>rx|tx)_(?P<unit>bytes|packets)$")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # e.g. "never" for a tunnel without a handshake yet


class VWireMetrics(Collector):
    """See the module docstring."""

    def __init__(self, read: ReadCounters, clock: Callable[[], float] = time.monotonic) -> None:
        self.read = read
        self.clock = clock
        self.snapshot: dict[str, dict[str, str]] = {}
        self.taken: float | None = None

    async def refresh(self) -> None:
        """Read every vWire's counters now."""
        self.snapshot = await self.read()
        self.taken = self.clock()

    async def keep_fresh(self, interval: float = 5.0) -> None:
        """Refresh every ``interval`` seconds until cancelled (a failed read is logged)."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # keep serving the last snapshot: metrics must not stop
                _log.warning("reading vWire counters failed", error=str(exc))
            await asyncio.sleep(interval)  # the refresh period

    def describe(self) -> Iterator[Metric]:
        yield from _Families().all()

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        for conn_id, metrics in sorted(self.snapshot.items()):
            for key, text in metrics.items():
                value = _number(text)
                if value is not None:
                    families.add(conn_id, key, value)
                elif key == "wireguard_endpoint":
                    families.info.add_metric([conn_id, text], 1)
        if self.taken is not None:
            families.age.add_metric([], self.clock() - self.taken)
        yield from families.all()


class _Families:
    """The metric families of one collection."""

    def __init__(self) -> None:
        ends = ["connection", "side", "direction"]
        self.bytes = CounterMetricFamily(
            "vwire_vwire_bytes", "Bytes through each end of a vWire", labels=ends)
        self.packets = CounterMetricFamily(
            "vwire_vwire_packets", "Packets through each end of a vWire", labels=ends)
        self.mtu = GaugeMetricFamily(
            "vwire_vwire_mtu_bytes", "MTU of a vWire", labels=["connection"])
        self.handshake = GaugeMetricFamily(
            "vwire_vwire_handshake_age_seconds",
            "Seconds since a tunnel's last WireGuard handshake", labels=["connection"])
        self.age = GaugeMetricFamily(
            "vwire_vwire_metrics_age_seconds", "Seconds since the vWire counters were read")
        self.info = GaugeMetricFamily(
            "vwire_vwire_info", "A tunnel's WireGuard endpoint (the peer's ip:port); always 1",
            labels=["connection", "wireguard_endpoint"])

    def add(self, conn_id: str, key: str, value: float) -> None:
        counter = _COUNTER.match(key)
        if counter is not None:
            family = self.bytes if counter["unit"] == "bytes" else self.packets
            family.add_metric([conn_id, counter["side"], counter["direction"]], value)
        elif key == "mtu":
            self.mtu.add_metric([conn_id], value)
        elif key == "wireguard_last_handshake_age_seconds":
            self.handshake.add_metric([conn_id], value)

    def all(self) -> list[Metric]:
        return [self.bytes, self.packets, self.mtu, self.handshake, self.age, self.info]
