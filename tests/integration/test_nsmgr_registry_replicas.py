"""nsmgr with ``--registry`` naming two registry replicas (over one real etcd): its calls to the
registry move to the other replica when the one it used stops, and its registry watch goes on."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from api.proto.registry_pb2 import NetworkServiceEndpoint
from nsmgr.app import Nsmgr
from nsmgr.settings import NsmgrSettings
from sdk.registry.core import Query
from tests.integration.conftest import WAIT, StartRegistry, nse


async def test_nsmgr_uses_the_next_registry_replica(
    registries: StartRegistry, etcd_url: str, short_tmp: Path
) -> None:
    a, b = await registries(etcd_url), await registries(etcd_url)
    config = dataclasses.replace(
        NsmgrSettings(), listen=[f"unix://{short_tmp}/nsmgr.sock"],
        registry=f"{a.unix.url}, {b.unix.url}",
    )
    nsmgr = Nsmgr(config)
    await nsmgr.start()
    upstream = nsmgr.endpoints_upstream
    watch = upstream.find(Query(NetworkServiceEndpoint(), watch=True))
    try:
        await upstream.register(nse("first", ["svc"]))
        async with asyncio.timeout(WAIT):
            assert (await anext(watch)).record.name == "first"
        await a.registry.stop(grace=0)
        await upstream.register(nse("second", ["svc"]))  # through b now
        found = [e.record.name async for e in upstream.find(Query(NetworkServiceEndpoint()))]
        assert sorted(found) == ["first", "second"]
        async with asyncio.timeout(WAIT):
            event = await anext(watch)
        assert (event.record.name, event.deleted) == ("second", False)
    finally:
        await watch.aclose()
        await nsmgr.stop()
