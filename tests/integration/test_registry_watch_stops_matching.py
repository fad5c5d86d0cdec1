"""A watch learns when a record stops matching its query: an endpoint re-registered without the
service a watcher follows reaches that watcher as a deletion (of the record as the watcher knew
it), on a registry of its own and on replicas over a real etcd. Before, such a change was
announced to nobody whose query it no longer matched, so watchers (and the nsmgr's FindCache)
kept an endpoint for a service it had dropped."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from api.proto.registry_pb2 import NetworkServiceEndpoint
from tests.integration.conftest import WAIT, StartRegistry, endpoint_stub, endpoint_watcher, nse


def named(response: Any) -> tuple[str, bool]:
    return response.network_service_endpoint.name, response.deleted


@pytest.mark.parametrize("shared", [False, True], ids=["own-store", "etcd"])
async def test_a_record_that_stops_matching_is_deleted_for_its_watchers(
    registries: StartRegistry, request: pytest.FixtureRequest, shared: bool
) -> None:
    running = await registries(request.getfixturevalue("etcd_url") if shared else None)
    async with grpc.aio.insecure_channel(running.target()) as channel:
        stub = endpoint_stub(channel)
        db = endpoint_watcher(stub, NetworkServiceEndpoint(network_service_names=["db"]))
        everything = endpoint_watcher(stub)
        try:
            await stub.Register(nse("nse-1", ["db"]), timeout=WAIT)
            assert named(await db.next()) == named(await everything.next()) == ("nse-1", False)

            await stub.Register(nse("nse-1", ["cache"]), timeout=WAIT)
            gone = await db.next()
            assert named(gone) == ("nse-1", True)
            assert list(gone.network_service_endpoint.network_service_names) == ["db"]
            assert named(await everything.next()) == ("nse-1", False)  # still matches there

            await stub.Register(nse("nse-1", ["db"]), timeout=WAIT)
            assert named(await db.next()) == ("nse-1", False)  # matches again

            # Changes of a record that never matched stay unannounced to the db watcher.
            await stub.Register(nse("nse-2", ["cache"]), timeout=WAIT)
            await stub.Register(nse("nse-2", ["web"]), timeout=WAIT)
            await stub.Register(nse("nse-3", ["db"]), timeout=WAIT)
            assert named(await db.next()) == ("nse-3", False)
        finally:
            db.close()
            everything.close()
