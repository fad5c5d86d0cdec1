"""Per-vWire metrics of a forwarder: the collector turns the counters the forwarder reads
(``Xconnect.counters``: the same numbers ``nsmctl status`` shows) into series for the live
vWires only, with the snapshot's age."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from forwarder.metrics import VWireMetrics


async def test_the_snapshot_becomes_bounded_per_vwire_series() -> None:
    live: dict[str, dict[str, str]] = {
        "c-1": {"mtu": "1440", "client_rx_bytes": "1200", "client_tx_bytes": "800",
                "client_rx_packets": "12", "wireguard_rx_bytes": "3000",
                "wireguard_last_handshake_age_seconds": "7",
                "wireguard_endpoint": "10.250.0.2:51820"},
        "c-2": {"mtu": "1500", "endpoint_tx_packets": "3",
                "wireguard_last_handshake_age_seconds": "never"},
    }
    now = [100.0]

    async def read() -> dict[str, dict[str, str]]:
        return {k: dict(v) for k, v in live.items()}

    metrics = VWireMetrics(read, clock=lambda: now[0])
    registry = CollectorRegistry()
    registry.register(metrics)
    await metrics.refresh()
    now[0] = 103.0
    text = generate_latest(registry).decode()
    assert 'vwire_vwire_bytes_total{connection="c-1",direction="rx",side="client"} 1200.0' in text
    tunnel = 'vwire_vwire_bytes_total{connection="c-1",direction="rx",side="wireguard"} 3000.0'
    assert tunnel in text
    assert 'vwire_vwire_packets_total{connection="c-2",direction="tx",side="endpoint"} 3.0' in text
    assert 'vwire_vwire_mtu_bytes{connection="c-2"} 1500.0' in text
    assert 'vwire_vwire_handshake_age_seconds{connection="c-1"} 7.0' in text
    assert 'handshake_age_seconds{connection="c-2"}' not in text  # "never": no handshake yet
    assert "vwire_vwire_metrics_age_seconds 3.0" in text
    assert 'vwire_vwire_info{connection="c-1",wireguard_endpoint="10.250.0.2:51820"} 1.0' in text

    del live["c-1"]  # closed: its series go away at the next refresh
    await metrics.refresh()
    assert 'connection="c-1"' not in generate_latest(registry).decode()
