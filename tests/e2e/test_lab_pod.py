"""A Kubernetes pod in the lab, end to end: annotation → webhook → injected client → vWire.

``lab.pods.apply`` sends the manifest through the real webhook (HTTPS, AdmissionReview), applies
its patch, validates the result and runs the pod on node 1: the injected ``vwire-nsc --init``
connects (its SVID from the node agent, attested by SO_PEERCRED: the lab's nsmgr requires signed
paths) and waits for traffic, the ``vwire-nsc --resume`` sidecar keeps the connection, the app
container runs. The test pings the endpoint from the pod's namespace, deletes the pod and finds
nothing of it left: namespace, processes, vWire interfaces, the nsmgr's connection, files.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from lab import network, pods
from lab.observe import endpoint_address, monitor_connections, ping, wait_for
from lab.processes import Processes
from sdk.errors import PermissionDenied
from sdk.security.workload import fetch
from tests.e2e.conftest import MakeFabric

pytestmark = pytest.mark.privileged

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  annotations:
    networkservicemesh.io: kernel://db/nsm-1
spec:
  serviceAccountName: frontend
  terminationGracePeriodSeconds: 10
  containers:
  - name: app
    image: busybox
    command: ["sleep"]
    args: ["3600"]
"""


async def test_annotated_pod_gets_a_vwire_and_leaves_nothing(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(nodes=1)
    topology, node = fabric.topology, fabric.node(1)
    endpoint = await fabric.add_endpoint("nse-db", ["db"], node=1)
    said: list[str] = []
    record = await asyncio.to_thread(pods.apply, POD, 1, topology, said.append)
    assert any("validated against Kubernetes" in line for line in said), said
    netns = record["netns_name"]
    assert sorted(record["containers"]) == ["pod-web-app", "pod-web-vwire-nsc"]

    state = topology.state_dir / "pod-volumes" / "web" / "vwire-state" / "state.json"
    [conn] = json.loads(state.read_text())["connections"]
    assert conn["network_service"] == "db"
    assert await ping(netns, endpoint_address(conn))
    assert network.vwire_links(netns) and network.vwire_links(endpoint.netns)
    agent_log = Processes(topology).log("n1-agent").read_text()
    assert "spiffe://lab.vwire/ns/shop/sa/frontend" in agent_log  # the pod's own identity
    assert [p["phase"] for p in pods.pods(topology)] == ["Running"]
    assert pods.status_lines(topology) == [
        "pod shop/web on n1: Running (vwire-nsc running, app running)"]
    # The node's own processes are in no pod: the agent refuses them.
    with pytest.raises(PermissionDenied, match="runs in no pod"):
        await asyncio.to_thread(fetch, str(pods.agent_socket(node)))

    await asyncio.to_thread(pods.delete, "web", topology)

    assert netns not in network.namespaces(topology)
    assert pods.pods(topology) == []
    assert not [p for p in Processes(topology).recorded() if p.startswith("pod-")]
    assert not list(topology.state_dir.glob("pod-web-*"))
    assert not (topology.state_dir / "pod-volumes" / "web").exists()

    async def closed() -> bool:
        return not network.vwire_links(endpoint.netns) and not await monitor_connections(
            node.nsmgr_socket)

    await wait_for("the pod's vWire closed", closed, 20)


async def test_refused_pod_leaves_nothing(make_fabric: MakeFabric, tmp_path: Path) -> None:
    fabric = await make_fabric(nodes=1)
    bad = POD.replace("kernel://db/nsm-1", "kernel://db/an-interface-name-too-long")
    with pytest.raises(PermissionDenied, match="denied"):
        await asyncio.to_thread(pods.apply, bad, 1, fabric.topology)
    assert pods.pods(fabric.topology) == []
    assert not [n for n in network.namespaces(fabric.topology) if "-pod-" in n]
