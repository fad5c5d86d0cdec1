"""bench.connect's cost figures: a setup's CPU and its close's are reported apart; memory read
at rest carries the goal, the reading at a burst's end is printed beside it."""

from __future__ import annotations

import os

from bench.connect import Results, ScalingRound, cost_metrics


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


def _round(serial_ms: float, burst_ms: float, wall: float, busy: float) -> ScalingRound:
    """A round of 50 setups costing ``serial_ms`` each one by one and ``burst_ms`` at once."""
    return ScalingRound(50, 50, {"forwarder": 50 * serial_ms / 1000},
                        {"forwarder": 50 * burst_ms / 1000, "wireguard-go": 0.0}, wall, busy)


def test_the_median_round_holds_the_scaling_goal_and_the_worst_is_printed_beside_it() -> None:
    cores = os.cpu_count() or 1
    rounds = [_round(40, 30, 1.0, 0.9), _round(40, 50, 4.0, 0.5), _round(40, 40, 2.0, 0.95)]
    results = Results(sequential=[0.05] * 4, sequential_cpu={"forwarder": 0.12},  # 30 ms each
                      scaling=rounds)
    metrics = {metric.name: metric for metric in cost_metrics(results)}
    # each round: 50 serial setups' CPU over the cores, against the burst's wall time
    assert metrics["concurrent_scaling_efficiency"].value == round(50 * 0.04 / cores / 2.0, 3)
    assert metrics["concurrent_scaling_efficiency"].goal == 0.8
    assert metrics["concurrent_scaling_efficiency_worst"].value == round(2.0 / cores / 4.0, 3)
    assert metrics["concurrent_scaling_vs_sequential"].value == round(50 * 0.03 / cores / 2.0, 3)
    assert metrics["cpu_per_setup_serial"].value == 40.0
    assert metrics["cpu_per_setup_concurrent"].value == 40.0  # (30 + 50 + 40) / 3
    assert metrics["cpu_per_setup_concurrent_forwarder"].value == 40.0
    assert metrics["setup_concurrent_cores_busy"].value == 90.0  # the median round's


def test_a_round_whose_burst_made_nothing_is_left_out() -> None:
    results = Results(scaling=[ScalingRound(50, 0, {"forwarder": 1.0}, {}, 0.5, 0.9),
                               _round(20, 20, 1.0, 0.9)])
    figures = {metric.name: metric.value for metric in cost_metrics(results)}
    cores = os.cpu_count() or 1
    assert figures["concurrent_scaling_efficiency"] == round(50 * 0.02 / cores / 1.0, 3)
    assert "concurrent_scaling_vs_sequential" not in figures  # no sequential setups measured


def test_a_burst_that_made_fewer_setups_is_held_to_the_cpu_of_those_it_made() -> None:
    # 50 serial setups at 40 ms; the burst made 40 of its 50 in 1 s, spending 1.2 s of CPU
    results = Results(scaling=[ScalingRound(50, 40, {"forwarder": 2.0}, {"forwarder": 1.2},
                                            1.0, 0.9)])
    figures = {metric.name: metric.value for metric in cost_metrics(results)}
    cores = os.cpu_count() or 1
    assert figures["concurrent_scaling_efficiency"] == round(40 * 0.04 / cores / 1.0, 3)
    assert figures["cpu_per_setup_serial"] == 40.0
    assert figures["cpu_per_setup_concurrent"] == 30.0
