"""``terraform/examples/local`` applied with ``vwire-terraform``: the mesh-plan of the multi-cloud
example built on this machine as the multi-cloud lab, its outputs, traffic across the simulated
clouds at exactly the planned path MTU, and ``destroy`` leaving nothing. Runs on a copy of the
tree (Terraform's state stays out of the repository) under the test's own lab prefix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import network
from lab.fabric import Fabric
from lab.observe import df_ping
from lab.topology import Topology
from tests.e2e.conftest import new_topology
from tests.terraform.tf import ROOT, WRAPPER

SERVICE_NODE = {"db": "azure-1", "cache": "gcp-1"}  # the example's default services


@pytest.fixture
def lab_topology() -> Iterator[Topology]:
    topology = new_topology("tfl")
    yield topology
    Fabric(topology).down(grace=3.0)  # only does something when the test failed half-way


def _example_copy(tmp_path: Path) -> Path:
    """The example in a copy of terraform/ (and the bootstrap script mesh-plan reads)."""
    shutil.copytree(ROOT / "terraform", tmp_path / "terraform",
                    ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    shutil.copytree(ROOT / "deploy" / "bootstrap", tmp_path / "deploy" / "bootstrap")
    return tmp_path / "terraform" / "examples" / "local"


def _terraform(example: Path, topology: Topology, *args: str) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
               VWIRE_LAB_PREFIX=topology.prefix, VWIRE_LAB_STATE_DIR=str(topology.state_dir))
    done = subprocess.run([str(WRAPPER), f"-chdir={example}", *args, "-no-color"], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"terraform {args[0]}: {done.stdout[-3000:]}{done.stderr}"
    return done.stdout


def _lab_status(topology: Topology) -> dict[str, Any]:
    env = dict(os.environ, VWIRE_LAB_PREFIX=topology.prefix,
               VWIRE_LAB_STATE_DIR=str(topology.state_dir))
    done = subprocess.run([sys.executable, "-m", "nsmctl", "lab", "status", "-o", "json"],
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def _processes_naming(text: str) -> str:
    """``pgrep -af TEXT``: the processes whose command line holds ``text``."""
    return subprocess.run(["pgrep", "-af", text], capture_output=True, text=True,
                          check=False).stdout


def _path_key(a: str, b: str) -> str:
    return ":".join(sorted((a, b)))


async def test_local_example_applies_the_plan_and_destroys_everything(
    tmp_path: Path, lab_topology: Topology
) -> None:
    example = _example_copy(tmp_path)
    _terraform(example, lab_topology, "init", "-input=false")
    _terraform(example, lab_topology, "apply", "-auto-approve", "-input=false")

    outputs = json.loads(_terraform(example, lab_topology, "output", "-json"))
    plan_nodes = outputs["nodes"]["value"]
    path_mtus = outputs["path_mtus"]["value"]
    assert outputs["gateways"]["value"] == {
        "aws": "aws-1", "azure": "azure-1", "gcp": "gcp-1", "on-prem": "dc-1"}

    status = _lab_status(lab_topology)
    assert status["up"] is True and status["kind"] == "multi-cloud"
    # The lab is the plan's, not the built-in topology (there gcp-1 is behind masquerade).
    assert {n["name"]: n["nat"] for n in status["nodes"]} == {
        name: node["nat"] for name, node in plan_nodes.items()}
    assert {d["name"]: d["mtu"] for d in status["domains"]} == {
        "aws": 9001, "azure": 1500, "gcp": 1460, "on-prem": 1500}

    for client in status["clients"]:
        (conn,) = client["connections"]
        service = conn["network_service"].split("@")[0]
        planned = path_mtus[_path_key(client["node"], SERVICE_NODE[service])]
        assert conn["context"]["MTU"] == planned, client["name"]
        target = conn["context"]["ip_context"]["dst_ip_addrs"][0].split("/")[0]
        assert await df_ping(client["netns"], target, planned), client["name"]
        assert not await df_ping(client["netns"], target, planned + 1), client["name"]
    (host,) = status["external_hosts"]
    service_ip = Path(host["config"]).read_text().split("AllowedIPs = ")[1].split("/")[0]
    assert await df_ping(host["netns"], service_ip, 100)

    _terraform(example, lab_topology, "destroy", "-auto-approve", "-input=false")
    assert network.namespaces(lab_topology) == []
    assert not lab_topology.state_dir.exists()
    assert _processes_naming(lab_topology.prefix) == ""
