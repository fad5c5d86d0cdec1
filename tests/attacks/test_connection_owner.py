"""A connection belongs to the client that made it (issue 12, item 2: a local process must not
act as another): a workload with a valid identity of its own that learnt a victim's connection
id and path signs a path of its own for it. Before ``ConnectionOwner`` its request moved the
victim's connection into the attacker's namespace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.security import token
from tests.attacks.test_tokens import kernel, refused, state, svid_of, victim
from tests.integration.fabric import Fabric, Identities, temporary_fabric


@pytest.fixture
async def fabric() -> AsyncIterator[Fabric]:
    async with temporary_fabric("vwo-", identities=True) as fab:
        yield fab


def taken_over(fabric: Fabric, conn: Connection) -> Connection:
    """The victim's connection with its first segment re-signed by the attacker ``evil``."""
    attacker = svid_of(fabric, "nsc", fabric.client(fabric.nodes[0], "evil").name)
    forged = Connection()
    forged.CopyFrom(conn)
    forged.path.index = 0
    first = forged.path.path_segments[0]
    first.token, _ = token.sign(
        attacker, Identities.spiffe_id("nsmgr", "nsmgr-n1"), first.id)
    return forged


async def test_another_client_cannot_close_a_connection(fabric: Fabric) -> None:
    client, conn = await victim(fabric)
    node = fabric.nodes[0]
    forged = taken_over(fabric, conn)
    before = await state(fabric)

    # Refused twice over: the rest of the path does not chain to the attacker's segment, and
    # the connection is not the attacker's.
    error = await refused(node.nsmgr_url, forged)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    assert await state(fabric) == before, "nothing closed"
    assert await client.connect(), "the victim's own refresh still works"


async def test_another_client_cannot_move_a_connection(fabric: Fabric) -> None:
    client, conn = await victim(fabric)
    node = fabric.nodes[0]
    forged = taken_over(fabric, conn)
    request = NetworkServiceRequest(connection=forged)
    request.mechanism_preferences.append(kernel(node, "evil"))
    before = await state(fabric)

    error = await refused(node.nsmgr_url, request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    assert "a client may refresh only its own connections" in (error.details() or "")
    assert await state(fabric) == before, "nothing created, nothing moved"
    assert await client.connect(), "the victim's own refresh still works"
