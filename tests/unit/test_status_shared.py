"""``nsmctl status`` for vWires over shared devices: the via column names the shared device and
its address space, and the counters come from the workload's veth (a shared device's own
counters are the node pair's, not the connection's)."""

from __future__ import annotations

from nsmctl.connections import summary


def conn(metrics: dict[str, str]) -> dict[str, object]:
    return {"id": "c1", "network_service": "db", "path": {"path_segments": [
        {"name": "nsc", "metrics": {}}, {"name": "forwarder-n1", "metrics": metrics}]}}


def test_a_shared_vwire_shows_its_device_and_the_workload_counters() -> None:
    shown = summary(conn({"wireguard_device": "shared", "wireguard_space": "1",
                          "wireguard_last_handshake_age_seconds": "3",
                          "workload_rx_bytes": "2048", "workload_tx_bytes": "1024"}))
    assert shown["via"] == "wireguard shared #1"
    assert shown["handshake"] == "3s ago"
    assert shown["rx_tx"] == "2.0KiB/1.0KiB"


def test_a_device_per_vwire_shows_as_before() -> None:
    shown = summary(conn({"wireguard_device": "per-vwire", "wireguard_rx_bytes": "10",
                          "wireguard_tx_bytes": "20"}))
    assert shown["via"] == "wireguard"
