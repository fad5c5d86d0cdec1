"""Refresh keeps a connection alive past several token lifetimes (2 s lifetimes, > 3 of them)."""

from __future__ import annotations

import asyncio
import time

from lab.observe import endpoint_address, path_ids, ping, wait_for
from tests.e2e.conftest import MakeFabric

LIFETIME = 2.0
WATCH = 3.5 * LIFETIME


async def test_refresh_keeps_the_connection_past_several_lifetimes(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric(nodes=2, token_lifetime=LIFETIME)
    await fabric.add_endpoint("nse-remote", ["remote-svc"], node=2)
    client = await fabric.add_client("nsc", node=1, urls=["kernel://remote-svc/nsm0"],
                                     lifetime=LIFETIME)
    first = client.connection()
    target = endpoint_address(first)

    async def answers() -> bool:
        return await ping(client.netns, target, wait=0.5)

    await wait_for("first ping", answers, 10)
    start, pings, lost = time.monotonic(), 0, 0
    while time.monotonic() - start < WATCH:  # bounded by WATCH: the subject is time passing
        pings += 1
        lost += not await ping(client.netns, target, wait=0.5)
        current = client.connection()
        assert current.get("id") == first["id"], "the connection kept its id"
        await asyncio.sleep(0.25)  # pacing the pings, not synchronising
    last = client.connection()
    assert last["id"] == first["id"]
    assert path_ids(last) == path_ids(first), "a refresh keeps every hop's segment id"
    assert last["path"]["path_segments"][0]["expires"] != first["path"]["path_segments"][0][
        "expires"], "the client refreshed (its segment's expiry moved)"
    refreshes = [e for e in client.events() if e.get("event") == "connected"]
    assert len(refreshes) >= 1 + int(WATCH / (LIFETIME / 3)) // 2, (
        f"expected a refresh about every {LIFETIME / 3:.2f} s, saw {len(refreshes)} versions")
    assert lost <= 1, f"{lost} of {pings} pings lost while refreshing"
    assert await ping(client.netns, target, wait=1.0)
    at_nsmgr = (await fabric.nsmgr_connections())["n1"]
    assert at_nsmgr and all(first["id"] in path_ids(c) for c in at_nsmgr), at_nsmgr
