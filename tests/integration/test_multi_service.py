"""One workload connected to two services whose endpoints hand out the same pool (the README's
``nsmctl lab up --service a --service b`` once failed so: both endpoints gave the client the same
addresses, and programming the second vWire's route failed with "File exists").

The clients of one namespace share an ``ExcludePrefixes``: each request excludes what the
others use, and the endpoint's IPAM assigns around it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from nsc.client import VWireClient
from sdk.networkservice.excludedprefixes import ExcludePrefixes
from tests.integration.fabric import Fabric, temporary_fabric


@pytest.fixture
async def fabric() -> AsyncIterator[Fabric]:
    async with temporary_fabric("vwm-") as fab:
        yield fab


def clients(fabric: Fabric, exclude: ExcludePrefixes | None) -> list[VWireClient]:
    node = fabric.nodes[0]
    netns = node.workload("web")
    made = [
        VWireClient(name="web", nsmgr=node.nsmgr_url, pool=fabric.pool, netns_url=netns,
                    network_service=service, interface=f"nsm{i}", keep=False, probe=False,
                    exclude=exclude)
        for i, service in enumerate(["db", "cache"])
    ]
    fabric.clients.extend(made)
    return made


async def start(fabric: Fabric) -> None:
    await fabric.start(1)
    node = fabric.nodes[0]
    await fabric.endpoint(node, "nse-db", service="db")  # both: 10.60.0.0/16, fd00:60::/64
    await fabric.endpoint(node, "nse-cache", service="cache")


async def test_two_services_from_one_pool_get_distinct_addresses(fabric: Fabric) -> None:
    await start(fabric)
    db, cache = clients(fabric, ExcludePrefixes())
    first, second = await db.connect(), await cache.connect()
    mine = [set(c.context.ip_context.src_ip_addrs) | set(c.context.ip_context.dst_ip_addrs)
            for c in (first, second)]
    assert mine[0] and mine[1] and not mine[0] & mine[1], mine
    assert set(second.context.ip_context.excluded_prefixes) >= mine[0]
    links = await fabric.nodes[0].kernel.list_links(db.mechanism.netns_url)
    assert {"nsm0", "nsm1"} <= {link.name for link in links}

    refreshed = await cache.connect()  # a refresh keeps its addresses
    assert set(refreshed.context.ip_context.src_ip_addrs) == set(
        second.context.ip_context.src_ip_addrs)
    await db.close()
    third = await db.connect()  # a new connection after the close may reuse nothing of cache's
    assert not (set(third.context.ip_context.src_ip_addrs) & mine[1])


async def test_without_the_shared_exclusion_the_second_vwire_clashes(fabric: Fabric) -> None:
    """What the shared element prevents: the same addresses twice in one namespace."""
    await start(fabric)
    db, cache = clients(fabric, None)
    first = await db.connect()
    with pytest.raises(Exception, match="exists"):
        await cache.connect()
    assert first.context.ip_context.src_ip_addrs
