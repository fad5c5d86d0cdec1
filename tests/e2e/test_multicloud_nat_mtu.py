"""Across a simulated internet with NAT (lab.multi, real namespaces, nftables, wireguard-go;
domains aws and gcp each with its registry, gateway and trust domain): nodes behind 1:1 NAT and
behind a masquerading NAT get vWires (requested as ``service@domain`` through both gateways)
that pass traffic in both directions, two nodes both behind masquerade in different clouds are
refused with a message naming both, and every path's MTU is computed: a don't-fragment ping of
exactly the vWire's MTU passes, one byte more does not (intra-aws jumbo, aws-gcp, gcp-gcp).
Everything is removed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import yaml

from lab import network
from lab.clouds import parse
from lab.multi import MultiLab
from lab.observe import df_ping, endpoint_address, wait_for
from tests.e2e.conftest import new_topology

TOPOLOGY = """
domains:
  - name: aws
    cloud: aws
    nodes: [{name: aws-1, nat: one-to-one}, {name: aws-2, nat: masquerade}]
  - name: gcp
    cloud: gcp
    nodes: [{name: gcp-1, nat: one-to-one}, {name: gcp-2, nat: masquerade}]
services:
  - {name: a1, node: aws-1}
  - {name: a2, node: aws-2}
  - {name: g1, node: gcp-1}
  - {name: g2, node: gcp-2}
clients:
  - {name: masq, node: aws-2, services: [g1]}
  - {name: pub, node: gcp-1, services: [a2]}
  - {name: jumbo, node: aws-2, services: [a1]}
  - {name: gcp, node: gcp-1, services: [g2]}
  - {name: none, node: aws-2, services: [g2]}
"""
# client -> (service as asked, expected vWire MTU): aws 9001, gcp 1460, internet 1500, WG 60
PATHS = {"masq": ("g1@gcp", 1400), "pub": ("a2@aws", 1400), "jumbo": ("a1", 8941),
         "gcp": ("g2", 1400)}

# a lab of 4 nodes and 12 processes per test: generous on a loaded 2-core machine
pytestmark = [pytest.mark.privileged, pytest.mark.timeout(300)]


@pytest.fixture
async def lab() -> AsyncIterator[MultiLab]:
    made = MultiLab(new_topology("mc"), parse(yaml.safe_load(TOPOLOGY)))
    try:
        await made.up(TOPOLOGY, "test")
        for index, service in enumerate(made.model.services):
            await made.add_endpoint(service, index)
        yield made
    finally:
        made.down(grace=3.0)
        assert network.namespaces(made.topology) == []
        assert not made.topology.state_dir.exists()


def link_mtu(netns: str, ifname: str) -> int:
    fields = network.ip("-o", "link", "show", ifname, netns=netns).split()
    return int(fields[fields.index("mtu") + 1])


async def test_nat_kinds_and_path_mtu(lab: MultiLab) -> None:
    for spec in lab.model.clients:
        if spec.name != "none":
            await lab.add_client(spec)
    for name, (service, mtu) in PATHS.items():
        client = lab.clients[name]
        conn = client.connections()[0]
        assert conn["network_service"] == service
        assert conn["context"]["MTU"] == mtu, name
        hops = [segment["name"] for segment in conn["path"]["path_segments"]]
        if "@" in service:  # across domains: through both domains' gateways
            assert [h for h in hops if h.startswith("gateway-")] == [
                "gateway-aws", "gateway-gcp"] if name == "masq" else [
                "gateway-gcp", "gateway-aws"], hops
        target = endpoint_address(conn)

        async def passes(netns: str = client.netns, address: str = target, size: int = mtu
                         ) -> bool:
            return await df_ping(netns, address, size)

        await wait_for(f"{name}: DF ping of {mtu} bytes to {service}", passes, 20)
        assert not await df_ping(client.netns, target, mtu + 1), f"{name}: {mtu + 1} passed"
        short = service.split("@")[0]
        endpoint_ns = lab.node(next(s.node for s in lab.model.services if s.name == short)
                               ).workload_netns(short)
        ends = [link for link in network.ip("-o", "link", netns=endpoint_ns).split("\n")
                if "POINTOPOINT" in link]
        (line,) = ends
        assert f"mtu {mtu} " in line, (name, line)  # both ends agree
        assert link_mtu(client.netns, "nsm0") == mtu


async def test_both_behind_masquerade_is_refused_naming_both(lab: MultiLab) -> None:
    spec = next(c for c in lab.model.clients if c.name == "none")
    client = await lab.add_client(spec, wait=False)

    async def gave_up() -> bool:
        return lab.processes.pid_of(client.process) is None

    await wait_for("the client of two masqueraded nodes to give up", gave_up, 60)
    log = lab.processes.log(client.process).read_text()
    assert "no vWire between forwarder-aws-2 in site 'aws' and forwarder-gcp-2 in site 'gcp'" \
        in log, log[-2000:]
    assert "behind a masquerading NAT" in log
    assert client.connections() == []
    assert network.vwire_links(client.netns) == []
