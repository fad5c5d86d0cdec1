"""``nsmctl lab up``, ``lab status -o json``, ``lab down`` leave nothing behind (the README's
main job). The lab runs under its own prefix and state directory (``VWIRE_LAB_PREFIX``,
``VWIRE_LAB_STATE_DIR``), so a user's own lab is not touched."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator

import pytest

from lab import network
from lab.fabric import Fabric
from lab.processes import Processes, alive, run_module
from lab.topology import Topology
from tests.e2e.conftest import new_topology


@pytest.fixture
def lab_topology() -> Iterator[Topology]:
    topology = new_topology("lab")
    yield topology
    Fabric(topology).down(grace=3.0)  # only does something when the test failed half-way


Lab = Callable[..., Awaitable[str]]


def lab_cli(topology: Topology, timeout: float = 120) -> Lab:
    """``nsmctl lab ARGS`` for the lab of ``topology``; its stdout (asserts exit 0)."""
    env = {"VWIRE_LAB_PREFIX": topology.prefix, "VWIRE_LAB_STATE_DIR": str(topology.state_dir)}

    async def nsmctl(*args: str) -> str:
        done = await run_module(["nsmctl", "lab", *args], env=env, timeout=timeout)
        assert done.returncode == 0, f"nsmctl lab {' '.join(args)}: {done.stderr}{done.stdout}"
        return done.stdout

    return nsmctl


async def test_lab_up_status_down_leaves_nothing(lab_topology: Topology) -> None:
    nsmctl = lab_cli(lab_topology)
    shown = await nsmctl("up", "--nodes", "2")
    assert f"ip netns exec {lab_topology.prefix}n1-nsc ping" in shown
    status = json.loads(await nsmctl("status", "-o", "json"))
    assert status["up"] is True
    assert [n["name"] for n in status["nodes"]] == ["n1", "n2"]
    assert all(n["nsmgr"] and n["forwarder"] for n in status["nodes"])
    assert len(status["client"]) == 1
    assert status["client"][0].get("state", "UP") == "UP"  # UP is the proto default: omitted
    assert {c["node"] for c in status["connections"]} == {"n1", "n2"}
    shown = [s.get("token", "") for c in [*status["connections"], *status["client"]]
             for s in c["path"]["path_segments"]]
    assert any(shown) and all(t.startswith("sha256:") for t in shown if t), (
        "the status shows path tokens' fingerprints, never the tokens")
    processes = Processes(lab_topology)
    pids = [p for name in processes.recorded() if (p := processes.pid_of(name)) is not None]
    assert len(pids) == 2 + 2 * 2 + 1 + 1  # registry, ca-agent, nsmgr+forwarder per node, nse, nsc
    assert processes.stray_wireguard(), "the lab's remote vWire runs wireguard-go"

    await nsmctl("down")

    assert network.namespaces(lab_topology) == []
    assert not lab_topology.state_dir.exists()
    assert [p for p in pids if alive(p)] == []
    assert processes.stray_wireguard() == {}
    assert json.loads(await nsmctl("status", "-o", "json"))["up"] is False


async def test_the_readme_multi_service_lab_connects_every_service(
    lab_topology: Topology,
) -> None:
    """``nsmctl lab up --nodes 3 --service a --service b`` (README, docs/lab.md): one client, two
    services, two vWires with distinct addresses (it once failed: both endpoints handed out the
    same addresses)."""
    nsmctl = lab_cli(lab_topology)
    await nsmctl("up", "--nodes", "3", "--service", "a", "--service", "b")
    status = json.loads(await nsmctl("status", "-o", "json"))
    client = status["client"]
    assert sorted(c["network_service"] for c in client) == ["a", "b"]
    addresses = [set(c["context"]["ip_context"]["src_ip_addrs"]) for c in client]
    assert addresses[0] and addresses[1] and not addresses[0] & addresses[1], addresses
    await nsmctl("down")
    assert network.namespaces(lab_topology) == []
