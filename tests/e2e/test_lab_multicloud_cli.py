"""``nsmctl lab up --topology multi-cloud`` (the built-in aws + gcp + azure + on-prem lab),
``lab status -o json`` and ``lab down``: four domains each with its registry, gateway and trust
domain, the demo's cross-cloud clients connected through both gateways with the path's MTU (a
don't-fragment ping of exactly that size passes), a VM joined with the bootstrap script whose
workload reaches its service, an external host configured only from its exported wg-quick file
that pings its service, and down leaves no process, wireguard-go, namespace (with its nft
table) or file. Runs under its own prefix and state directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import network
from lab.fabric import Fabric
from lab.observe import df_ping
from lab.processes import Processes, alive, run_module
from lab.topology import Topology
from tests.e2e.conftest import new_topology


@pytest.fixture
def lab_topology() -> Iterator[Topology]:
    topology = new_topology("mcl")
    yield topology
    Fabric(topology).down(grace=3.0)  # only does something when the test failed half-way


async def nsmctl_lab(topology: Topology, *args: str) -> str:
    """``nsmctl lab ARGS`` for the lab of ``topology``; its stdout (asserts exit 0)."""
    env = {"VWIRE_LAB_PREFIX": topology.prefix, "VWIRE_LAB_STATE_DIR": str(topology.state_dir)}
    done = await run_module(["nsmctl", "lab", *args], env=env, timeout=240)
    assert done.returncode == 0, f"nsmctl lab {' '.join(args)}: {done.stderr}{done.stdout}"
    return done.stdout

# client -> (service as asked, the path's vWire MTU): aws 9001 / azure 1500 / gcp 1460, WG 60
DEMO = {"web": ("db@azure", 1440), "app": ("cache@gcp", 1400)}


@pytest.mark.timeout(300)  # 30 processes; the lab comes up in about 20 s on an idle machine
async def test_multi_cloud_lab_up_status_down(lab_topology: Topology) -> None:
    async def nsmctl(*args: str) -> str:
        return await nsmctl_lab(lab_topology, *args)

    shown = await nsmctl("up", "--topology", "multi-cloud")
    assert "try it (clients: a don't-fragment ping of exactly the vWire's MTU)" in shown
    assert "VM vm-1 (azure, 172.16.3.101, joined with nsmctl node join)" in shown
    status = json.loads(await nsmctl("status", "-o", "json"))
    assert status["up"] is True and status["kind"] == "multi-cloud"
    assert [(d["name"], d["mtu"], d["trust_domain"]) for d in status["domains"]] == [
        ("aws", 9001, "aws.vwire"), ("gcp", 1460, "gcp.vwire"), ("azure", 1500, "azure.vwire"),
        ("on-prem", 1500, "on-prem.vwire")]
    assert {n["nat"] for n in status["nodes"]} == {"one-to-one", "masquerade", "none"}
    for client in status["clients"]:
        (conn,) = client["connections"]
        service, mtu = DEMO[client["name"]]
        assert (conn["network_service"], conn["context"]["MTU"]) == (service, mtu)
        hops = [s["name"] for s in conn["path"]["path_segments"]]
        domain = service.split("@")[1]
        assert [h for h in hops if h.startswith("gateway-")] == ["gateway-aws",
                                                                  f"gateway-{domain}"]
        target = conn["context"]["ip_context"]["dst_ip_addrs"][0].split("/")[0]
        assert await df_ping(client["netns"], target, mtu), client["name"]
        assert not await df_ping(client["netns"], target, mtu + 1), client["name"]
    (vm,) = status["vms"]
    assert vm["nsmgr"] and vm["forwarder"]
    (conn,) = vm["connections"]
    assert conn["network_service"] == "db"
    assert conn["context"]["MTU"] == 1440  # inside azure's site: its 1500 underlay
    segments = {s["name"]: s for s in conn["path"]["path_segments"]}
    assert not [name for name in segments if name.startswith("gateway-")]
    # a node of azure's site: it dials azure-1 at its address inside the site, not the public one
    dialled = segments["forwarder-vm-1"].get("metrics", {}).get("wireguard_endpoint", "")
    assert dialled.startswith("172.16.3.11:"), segments["forwarder-vm-1"]
    target = conn["context"]["ip_context"]["dst_ip_addrs"][0].split("/")[0]
    assert await df_ping(vm["client_netns"], target, 100)
    (host,) = status["external_hosts"]
    conf = Path(host["config"]).read_text()
    assert "persistent-keepalive 25" in conf and "Endpoint = 100.64.3.11:" in conf
    service = conf.split("AllowedIPs = ")[1].split("/")[0]
    assert await df_ping(host["netns"], service, 100)
    processes = Processes(lab_topology)
    pids = [p for name in processes.recorded() if (p := processes.pid_of(name)) is not None]
    # per domain ca-agent, registry, gateway (4 x 3), per node nsmgr + forwarder (5 x 2),
    # two endpoints, two clients, the VM's nsmgr, forwarder and client, the external router
    assert len(pids) == 12 + 10 + 2 + 2 + 3 + 1
    assert processes.stray_wireguard()

    await nsmctl("down")

    assert network.namespaces(lab_topology) == []
    assert not lab_topology.state_dir.exists()
    assert [p for p in pids if alive(p)] == []
    assert processes.stray_wireguard() == {}
    assert json.loads(await nsmctl("status", "-o", "json"))["up"] is False
