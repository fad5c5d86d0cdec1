"""nsmctl node join's files: the units systemd would run (checked by systemd-analyze verify
where it is installed, and always by the supervisor's own parser, which must find the same
command, env file and namespace), the env file round trip, and the bootstrap script's limits."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from nsmctl import join
from sdk.errors import InvalidArgument

SCRIPT = Path(__file__).resolve().parents[2] / "deploy/bootstrap/node.sh"


def _plan(root: Path, netns: str = "") -> join.JoinPlan:
    return join.JoinPlan("vm-1", "tcp://10.0.0.1:5000", root / "identity", root, sys.executable,
                         "tcp://10.0.0.2:5001", "ens5", netns)


def test_units_verify_and_parse_to_what_the_supervisor_runs(tmp_path: Path) -> None:
    plan = replace(_plan(tmp_path, netns="lab-vm"), signer="tcp://10.0.0.1:5443")
    units = join.render_units(plan)
    assert list(units) == [*join.UNITS, join.RENEW_UNIT]
    assert list(join.render_units(_plan(tmp_path))) == list(join.UNITS)  # no signer, no renewal
    for name, text in units.items():
        (tmp_path / name).write_text(text)
        spec = join.parse_unit(text, name)
        assert spec.env_file == join.Layout(tmp_path).env_file
        if name == join.RENEW_UNIT:
            assert spec.exec_start == [sys.executable, "-m", "nsmctl", "node", "renew",
                                       "--signer", "tcp://10.0.0.1:5443", "--root", str(tmp_path)]
            continue
        module = "nsmgr" if "nsmgr" in name else "forwarder"
        assert spec.exec_start == [sys.executable, "-m", module]
        assert spec.netns_path == "/var/run/netns/lab-vm"
    assert "BindsTo=vwire-nsmgr.service" in units["vwire-forwarder.service"]
    if shutil.which("systemd-analyze"):
        done = subprocess.run(
            ["systemd-analyze", "verify", *(str(tmp_path / name) for name in units)],
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "vwire-" not in done.stderr, done.stderr  # no warning about our units


def test_env_file_round_trips_and_names_every_setting(tmp_path: Path) -> None:
    env = join.environment(_plan(tmp_path))
    assert env["VWIRE_NSMGR_LISTEN"] == (
        f"unix://{tmp_path}/var/run/vwire/nsmgr.sock,tcp://10.0.0.2:5001")
    assert env["VWIRE_FORWARDER_UNDERLAY_INTERFACE"] == "ens5"
    assert env["VWIRE_NSMGR_NAME"] == "nsmgr-vm-1"
    tricky = {**env, "VWIRE_NSMGR_REGISTRY": "tcp://[fd00::1]:5000 $HOME 'x'"}
    assert join.parse_env(join.render_env(tricky)) == tricky


def test_bootstrap_script_is_small_posix_sh() -> None:
    assert SCRIPT.stat().st_size < 16 * 1024  # AWS user data limit
    assert SCRIPT.read_text().startswith("#!/bin/sh\n")
    shell = shutil.which("dash") or "sh"
    done = subprocess.run([shell, "-n", str(SCRIPT)], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert "bash" not in SCRIPT.read_text().split("\n", 1)[1]


def test_more_settings_reach_the_env_file_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    extra = join.parse_settings(["VWIRE_NSMGR_DOMAIN=aws", "VWIRE_FORWARDER_SITE=aws-eu"])
    env = join.environment(replace(_plan(tmp_path), settings=extra))
    assert env["VWIRE_NSMGR_DOMAIN"] == "aws" and env["VWIRE_FORWARDER_SITE"] == "aws-eu"
    for bad in ("VWIRE_NSMGR_NOSUCH=1", "VWIRE_NSMGR_REGISTRY=tcp://x:1", "PATH=/tmp",
                "VWIRE_FORWARDER_SITE", "VWIRE_FORWARDER_SITE=a\nVWIRE_NSMGR_INSECURE=true"):
        with pytest.raises(InvalidArgument) as caught:
            join.parse_settings([bad])
        assert caught.value.field == "--setting"
