"""bench.connect's cost figures: a setup's CPU and its close's are reported apart; memory read
at rest carries the goal, the reading at a burst's end is printed beside it."""

from __future__ import annotations

import os

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


def test_memory_at_rest_has_the_goal_and_the_burst_end_reading_is_beside_it() -> None:
    rest = {"n1": [140_000_000], "n2": [139_000_000], "wireguard-go": []}
    end = {"n1": [147_000_000], "n2": [146_000_000], "wireguard-go": []}
    metrics = {m.name: m for m in cost_metrics(Results(memory={100: rest},
                                                       burst_end_memory={100: end}))}
    assert metrics["control_plane_rss_n1_at_100"].value == 140.0
    assert metrics["control_plane_rss_n1_at_100"].ok is True  # < 150 MB
    assert metrics["control_plane_rss_n1_at_100_burst_end"].value == 147.0
    assert metrics["control_plane_rss_n1_at_100_burst_end"].goal is None


def test_the_burst_reports_its_efficiency_and_how_busy_the_cores_were() -> None:
    results = Results(sequential=[0.05] * 4, sequential_cpu={"forwarder": 0.16},  # 40 ms each
                      concurrent=[0.5] * 50, concurrent_wall=1.0, concurrent_busy=0.934,
                      concurrent_cpu={"forwarder": 1.5, "wireguard-go": 0.5})
    figures = {metric.name: metric.value for metric in cost_metrics(results)}
    assert figures["cpu_per_setup_concurrent"] == 40.0
    assert figures["setup_concurrent_cores_busy"] == 93.4
    cores = os.cpu_count() or 1
    assert figures["concurrent_scaling_efficiency"] == round(50 * 0.04 / cores / 1.0, 3)
