"""bench.connect's cost figures: a setup's CPU and its close's are reported apart."""

from __future__ import annotations

from bench.connect import Results, cost_metrics


def test_setup_and_close_cpu_are_reported_apart_and_summed_against_the_peer() -> None:
    results = Results(sequential=[0.05] * 4,
                      sequential_cpu={"forwarder": 0.12, "nsmgr": 0.04},  # 40 ms per setup
                      close_cpu={"forwarder": 0.08},  # 20 ms per close
                      peer_cpu=[0.03, 0.03])  # 30 ms to make and remove a tunnel by hand
    figures = {metric.name: metric.value for metric in cost_metrics(results)}
    assert figures["cpu_per_setup_sequential"] == 40.0
    assert figures["cpu_per_close_sequential"] == 20.0
    assert figures["cpu_per_setup_and_close_sequential"] == 60.0
    assert figures["cpu_per_setup_and_close_vs_raw_wireguard_go"] == 2.0
    assert figures["cpu_per_setup_sequential_forwarder"] == 30.0
    assert figures["cpu_per_close_sequential_forwarder"] == 20.0
    assert "cpu_per_close_sequential_nsmgr" not in figures
