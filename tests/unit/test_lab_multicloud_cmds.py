"""``nsmctl lab up --topology``: a bad topology (unreadable, not YAML, invalid) or single-domain
options beside it are usage errors (exit 2) naming the problem, and nothing is touched; ``lab
status`` of a multi-cloud lab shows domains, nodes, clients with MTU and path, the VM and the
external host. Nothing here builds a lab: the lab's functions are replaced."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from lab import multirun
from lab import run as lab
from nsmctl.app import main


def nsmctl(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def untouched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records any attempt to take a lab down or build one."""
    calls: list[str] = []
    monkeypatch.setattr(lab, "down", lambda *a, **k: calls.append("down"))
    monkeypatch.setattr(multirun, "MultiLab", lambda *a, **k: calls.append("build"))
    return calls


SINGLE_ONLY = "--nodes, --service, --registry-store and --wireguard-device"


@pytest.mark.parametrize(("args", "words"), [
    (["--topology", "/nonexistent/t.yaml"], "cannot read /nonexistent/t.yaml"),
    (["--topology", "BAD"], "topology: is not valid YAML"),
    (["--topology", "ibm"], "unknown cloud 'ibm'"),
    (["--topology", "multi-cloud", "--nodes", "3"], SINGLE_ONLY),
    (["--topology", "multi-cloud", "--service", "x"], SINGLE_ONLY),
])
def test_bad_topologies_are_usage_errors_and_touch_nothing(
    args: list[str], words: str, untouched: list[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("BAD").write_text("domains: [")
    Path("ibm").write_text("domains: [{name: a, cloud: ibm, nodes: [{name: a-1}]}]")
    code, _, err = nsmctl("lab", "up", *args)
    assert code == 2, err
    assert words in " ".join(err.split()), err
    assert untouched == []


def _status() -> dict[str, Any]:
    conn = {"network_service": "db@azure", "context": {
        "MTU": 1440, "ip_context": {"dst_ip_addrs": ["10.60.0.1/32"]}},
        "path": {"path_segments": [{"name": "web-aws-2"}, {"name": "gateway-aws"},
                                   {"name": "gateway-azure"}, {"name": "nse-db"}]}}
    return {
        "up": True, "kind": "multi-cloud", "wan_mtu": 1500,
        "domains": [{"name": "aws", "cloud": "aws", "mtu": 9001, "trust_domain": "aws.vwire",
                     "gateway": "tcp://100.64.1.1:5105", "gateway_up": True,
                     "registry_up": True}],
        "nodes": [{"name": "aws-2", "domain": "aws", "nat": "masquerade",
                   "underlay_ip": "172.16.1.12", "public_ip": "", "nsmgr": True,
                   "forwarder": False}],
        "clients": [{"name": "web", "node": "aws-2", "netns": "vwl-aws-2_web",
                     "connections": [conn]}],
        "vms": [{"name": "vm-1", "domain": "azure", "address": "172.16.3.101", "nsmgr": True,
                 "forwarder": True, "client_netns": "vwl-_vm_vm-1_app",
                 "connections": [{**conn, "network_service": "db"}]}],
        "external_hosts": [{"name": "laptop", "domain": "azure", "service": "db",
                            "address": "100.64.200.11", "config": "/x/host-laptop.conf"}],
    }


def test_status_of_a_multi_cloud_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multirun, "running_topology", lambda *a: object())
    monkeypatch.setattr(multirun, "status", lambda *a: _status())
    code, out, err = nsmctl("lab", "status")
    assert code == 0, err
    assert "aws.vwire" in out and "tcp://100.64.1.1:5105 up" in out
    assert "masquerade" in out and "DOWN" in out  # aws-2's forwarder
    assert "web-aws-2 > gateway-aws > gateway-azure > nse-db" in out
    assert "ip netns exec vwl-aws-2_web ping -c3 -M do -s 1412 10.60.0.1" in out
    assert "VM vm-1 (azure, 172.16.3.101, joined with nsmctl node join)" in out
    assert "external host laptop (100.64.200.11 on the internet) -> db in azure" in out
    code, out, _ = nsmctl("lab", "status", "-o", "json")
    assert code == 0 and '"kind": "multi-cloud"' in out
