"""A 90/10 weighted split: one match, two routes selecting endpoints by label, weights 90 and 10,
nsmgr with ``--select-policy weighted``; many connections land within a few percent of 90/10."""

from __future__ import annotations

from collections import Counter

from lab.processes import run_module
from tests.e2e.conftest import MakeFabric

CONNECTIONS = 60
TOLERANCE = 0.05  # absolute share

MANIFEST = """
kind: NetworkService
name: split
matches:
  - routes:
      - destination_selector: {tier: big}
        weight: 90
      - destination_selector: {tier: small}
        weight: 10
"""


async def test_weighted_routes_split_90_10(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(nodes=2, select_policy="weighted")
    applied = await run_module(["nsmctl", "--registry", fabric.registry_url, "apply", "-f", "-"],
                               stdin=MANIFEST)
    assert applied.returncode == 0, applied.stderr
    assert "networkservice/split created" in applied.stdout
    await fabric.add_endpoint("nse-big", ["split"], node=1, labels={"tier": "big"})
    await fabric.add_endpoint("nse-small", ["split"], node=2, labels={"tier": "small"})
    netns = fabric.add_workload_netns(1, "wclient")

    chosen: Counter[str] = Counter()
    async with fabric.in_process_clients(1, netns, "weighted-client") as clients:
        for i in range(CONNECTIONS):
            client, _ = await clients.connect("split", f"nsm{i}")
            assert client.connection is not None
            chosen[client.connection.network_service_endpoint_name] += 1
            await clients.close(client)

    assert set(chosen) == {"nse-big", "nse-small"}, chosen
    share = chosen["nse-big"] / CONNECTIONS
    assert abs(share - 0.9) <= TOLERANCE, f"split {dict(chosen)}: {share:.0%} to nse-big"
    assert not fabric.vwire_links(), "every connection was closed"
