"""nsmctl node join's files: the units systemd would run (checked by systemd-analyze verify
where it is installed, and always by the supervisor's own parser, which must find the same
command, env file and namespace), the env file round trip, and the bootstrap script's limits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from nsmctl import join, join_domain
from sdk.errors import InvalidArgument
from sdk.security.ca import CertificateAuthority
from sdk.security.source import FileSvidSource
from tests.cli import nsmctl

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


def _gateway_plan(root: Path, trust_domain: str = "dom1.test") -> join.JoinPlan:
    domain = join_domain.plan_for("tcp://10.0.0.1:5000", "dom1", trust_domain,
                                  root / "etc/vwire/ca", (5005, 5006), "")
    return replace(_plan(root), name="gw-1", role="gateway", domain=domain)


def test_gateway_units_come_first_and_point_nsmgr_at_the_local_services(tmp_path: Path) -> None:
    plan = _gateway_plan(tmp_path)
    units = join.render_units(plan)
    assert list(units) == [*join_domain.UNITS, *join.UNITS]
    commands = {name: join.parse_unit(text, name).exec_start for name, text in units.items()}
    ca = str(tmp_path / "etc/vwire/ca")
    assert commands[join_domain.SIGNER][2:] == ["nsmctl", "node", "signer", "--dir", ca,
                                                "--listen", "tcp://10.0.0.1:5006"]
    assert commands[join_domain.CA_AGENT][2:] == [
        "nsmctl", "ca", "agent", "--dir", ca, "--svids", str(tmp_path / "etc/vwire/identity")]
    assert commands[join_domain.REGISTRY][1:] == ["-m", "registry"]
    assert f"After=network-online.target {' '.join(join_domain.UNITS)}\n" in units[join.UNITS[0]]
    env = join.environment(plan)
    run = tmp_path / "var/run/vwire"
    assert env["VWIRE_NSMGR_REGISTRY"] == f"unix://{run}/registry.sock"
    assert env["VWIRE_REGISTRY_LISTEN"] == f"tcp://10.0.0.1:5000,unix://{run}/registry.sock"
    assert env["VWIRE_GATEWAY_REGISTRY"] == env["VWIRE_NSMGR_REGISTRY"]
    assert env["VWIRE_REGISTRY_GATEWAY"] == f"unix://{run}/gateway.sock"
    assert env["VWIRE_GATEWAY_LISTEN"] == f"tcp://0.0.0.0:5005,unix://{run}/gateway.sock"
    overridden = join.environment(replace(plan, settings=(("VWIRE_NSMGR_GATEWAY", "tcp://x:1"),)))
    assert overridden["VWIRE_NSMGR_GATEWAY"] == "tcp://x:1"  # --setting wins over the default
    if shutil.which("systemd-analyze"):
        for name, text in units.items():
            (tmp_path / name).write_text(text)
        done = subprocess.run(
            ["systemd-analyze", "verify", *(str(tmp_path / name) for name in units)],
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr


def test_gateway_install_makes_the_ca_here_and_leave_keeps_it_unless_purged(
        tmp_path: Path) -> None:
    root = tmp_path / "root"
    plan = replace(_gateway_plan(root), root=root)
    join.install(plan)
    ca = CertificateAuthority.load(root / "etc/vwire/ca")
    assert ca.trust_domain == "dom1.test"
    ids = {kind: str(FileSvidSource(root / "etc/vwire/identity" / kind).current().spiffe_id)
           for kind in join_domain.KINDS}
    assert ids == join_domain.spiffe_ids(plan.domain, "gw-1")  # type: ignore[arg-type]
    join.uninstall(root)
    assert sorted(p.name for p in (root / "etc/vwire").iterdir()) == ["ca"]
    assert not (root / "var").exists() and not (root / "etc/systemd").exists()

    join.install(plan)  # a second join uses the CA that is there, so never purges it
    assert CertificateAuthority.load(root / "etc/vwire/ca").root == ca.root
    join.uninstall(root, purge_ca=True)
    assert (root / "etc/vwire/ca/root.key").exists()

    fresh = tmp_path / "fresh"
    join.install(replace(_gateway_plan(fresh), root=fresh))
    join.uninstall(fresh, purge_ca=True)
    assert not fresh.exists()


def test_gateway_bad_input_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    root = tmp_path / "root"
    base = ["--registry", "tcp://10.0.0.1:5000", "node", "join", "--name", "gw-1", "--root",
            str(root), "--mode", "supervisor"]
    cases = {
        "--role": [*base, "--role", "gatewy", "--identity", str(tmp_path)],
        "--domain": [*base, "--role", "gateway"],
        "--registry": ["--registry", "unix:///x.sock", *base[2:], "--role", "gateway",
                       "--domain", "dom1"],
        "--identity": [*base, "--role", "gateway", "--domain", "dom1", "--identity", "/x"],
        "--trust-domain": [*base, "--role", "gateway", "--domain", "dom1",
                           "--trust-domain", "Bad TD"],
        "--signer-port": [*base, "--role", "gateway", "--domain", "dom1",
                          "--signer-port", "5005"],
    }
    for option, args in cases.items():
        done = nsmctl(*args)
        assert done.code == 2 and option in done.err, (option, done.err)
    join.install(replace(_gateway_plan(root, "other.test"), root=root))
    join.uninstall(root)  # the CA of other.test stays
    before = sorted(root.rglob("*"))
    assert all(str(p.relative_to(root)) in ("etc", "etc/vwire")
               or str(p.relative_to(root)).startswith("etc/vwire/ca") for p in before)
    wrong = nsmctl(*base, "--role", "gateway", "--domain", "dom1", "--trust-domain", "dom1.test")
    assert wrong.code == 2 and "holds the CA of 'other.test'" in wrong.err
    assert sorted(root.rglob("*")) == before
    script = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "VWIRE_ROLE": "gatewy", "VWIRE_VENV": sys.prefix,
                                 "VWIRE_ROOT": str(tmp_path / "script")})
    assert script.returncode == 1 and "VWIRE_ROLE must be node or gateway" in script.stderr
    assert not (tmp_path / "script").exists()
