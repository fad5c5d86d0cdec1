"""bench.scale's planning: what it refuses before building anything, and how it spreads
connections over the endpoints."""

from __future__ import annotations

import argparse
import json

import pytest

from bench import scale
from bench.scale import DAEMON_BYTES, RESERVE_BYTES, Config, fit_problem, steps_of

GiB = 1024**3


def test_a_run_that_fits_is_not_refused() -> None:
    need = 2 * 500 * DAEMON_BYTES + RESERVE_BYTES
    assert fit_problem(Config(connections=500), need) == ""


def test_a_run_that_does_not_fit_names_what_would() -> None:
    problem = fit_problem(Config(connections=500), 4 * GiB)
    fits = (4 * GiB - RESERVE_BYTES) // (2 * DAEMON_BYTES)
    assert f"--connections {fits}" in problem and "--local-share 0." in problem
    share = float(problem.rsplit("--local-share ", 1)[1])
    assert fit_problem(Config(connections=500, local_share=share), 4 * GiB) == ""


def test_steps_are_below_the_total_and_end_with_it() -> None:
    assert steps_of(Config(connections=500, steps=(100, 10, 900, 0))) == [10, 100, 500]


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5])
def test_local_share_is_spread_evenly(share: float) -> None:
    plan = scale.Scale.__new__(scale.Scale)
    plan.config = Config(connections=100, local_share=share)
    services = [plan._service(i) for i in range(100)]
    assert services.count("scale-local") == round(100 * share)
    remote = [s for s in services if s != "scale-local"]
    assert abs(remote.count("scale-n2") - remote.count("scale-n3")) <= 1  # n2 and n3 in turn


def test_bad_steps_name_the_flag() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="--steps"):
        scale._steps("10,many")


def test_exit_reports_are_counted_by_how_the_daemons_ended() -> None:
    deleted = {"event": "wireguard-go exited, waiting for its restart", "returncode": 0,
               "detail": "its tunnel device was deleted (the TUN reader stopped first, no "
                         "error); last lines: 06:01:32 Device closing | 06:01:32 Shutting down"}
    assert scale.exit_reason(json.dumps(deleted)) == str(deleted["detail"]).split(";")[0]
    assert scale.exit_reason(json.dumps({"event": "x", "detail": None})) == "?"
    assert scale.exit_reason("not json") == "?"


def test_growth_per_connection_is_from_the_first_step_to_the_last() -> None:
    first = scale.Step(10, rss={"n1-nsmgr": 50_000_000, "n1-forwarder": 90_000_000})
    last = scale.Step(110, rss={"n1-nsmgr": 60_000_000, "n1-forwarder": 100_000_000,
                                "wireguard-go": 1_100_000_000}, daemons=220)
    found = {m.name: m.value for m in scale.per_connection([first, last])}
    assert found["control_plane_rss_per_connection_n1"] == 200.0  # KB: 20 MB over 100
    assert found["wireguard_go_rss_per_daemon"] == 5.0
    assert scale.per_connection([first]) == []


def test_shared_devices_need_a_daemon_pair_per_node_pair_not_per_connection() -> None:
    per_vwire, shared = Config(connections=900), Config(connections=900, wireguard_device="shared")
    available = RESERVE_BYTES + 8 * DAEMON_BYTES
    assert (scale.daemons_needed(per_vwire), scale.daemons_needed(shared)) == (1800, 4)
    assert "--connections 4" in fit_problem(per_vwire, available)
    assert fit_problem(shared, available) == ""
    assert scale.daemons_needed(Config(connections=1, wireguard_device="shared")) == 2
