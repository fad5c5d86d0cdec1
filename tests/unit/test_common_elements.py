"""Begin, Metadata, UpdatePath and the sdk.testing helpers."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext, Key, Values
from sdk.errors import InvalidArgument, NotFound
from sdk.networkservice.begin import Begin
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement, NSCursor
from sdk.networkservice.metadata import Metadata
from sdk.networkservice.updatepath import UpdatePath, claim_segment
from sdk.testing import Check, Count, InjectError, conformance_problems


def req(conn_id: str = "c1") -> NetworkServiceRequest:
    request = NetworkServiceRequest()
    request.connection.id = conn_id
    request.connection.network_service = "svc"
    return request


class Gate(NetworkServiceElement):
    """Records call order and lets the test hold a call inside the chain."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.release = asyncio.Event()
        self.inside = asyncio.Event()

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        self.log.append(f"req-start {request.connection.id}")
        self.inside.set()
        if request.connection.labels.get("hold"):
            await self.release.wait()
        self.log.append(f"req-end {request.connection.id}")
        return await next.request(request)

    async def close(self, conn: Connection, next: NSCursor) -> None:
        self.log.append(f"close {conn.id}")
        await next.close(conn)


async def test_begin_serialises_calls_of_one_connection() -> None:
    gate = Gate()
    chain = NetworkServiceChain([Begin(), gate])
    held = req("a")
    held.connection.labels["hold"] = "1"
    first = asyncio.create_task(chain.run_request(held))
    await gate.inside.wait()
    closing = asyncio.create_task(chain.run_close(held.connection))
    other = asyncio.create_task(chain.run_request(req("b")))
    await other  # another connection is not blocked by the held one
    assert "req-end b" in gate.log and "close a" not in gate.log
    gate.release.set()
    await asyncio.gather(first, closing)
    assert gate.log.index("req-end a") < gate.log.index("close a")


async def test_begin_forgets_ids_and_binds_connection_id_for_logs() -> None:
    begin = Begin()
    bound: list[dict[str, object]] = []
    chain = NetworkServiceChain([
        begin, Check(lambda r, ctx: bound.append(structlog.contextvars.get_contextvars()))
    ])
    await chain.run_request(req("log-me"))
    assert bound == [{"connection_id": "log-me"}]
    assert structlog.contextvars.get_contextvars() == {}
    assert begin.active == 0


async def test_begin_rejects_a_request_without_id() -> None:
    with pytest.raises(InvalidArgument, match=r"connection\.id"):
        await NetworkServiceChain([Begin()]).run_request(req(""))


async def test_metadata_lives_from_request_to_close() -> None:
    metadata = Metadata()
    stored: list[Values] = []
    calls: Key[int] = Key("calls")

    def keep(request: NetworkServiceRequest, ctx: CallContext) -> None:
        ctx.metadata[calls] = ctx.metadata.get(calls, 0) + 1
        stored.append(ctx.metadata)

    chain = NetworkServiceChain([metadata, Check(keep)])
    conn = await chain.run_request(req("m"))
    await chain.run_request(req("m"))
    assert stored[0] is stored[1] and stored[0][calls] == 2
    kept = metadata.get("m")
    assert kept is not None and kept[calls] == 2 and len(kept) == 1
    await chain.run_close(conn)
    assert metadata.get("m") is None and len(metadata) == 0


async def test_metadata_dropped_after_failed_first_request_kept_after_failed_refresh() -> None:
    metadata = Metadata()
    failing = InjectError(NotFound("nope"), after=1)
    chain = NetworkServiceChain([metadata, failing])
    await chain.run_request(req("ok"))  # first call passes
    with pytest.raises(NotFound):
        await chain.run_request(req("ok"))  # a failed refresh keeps the live connection's data
    assert metadata.get("ok") is not None
    with pytest.raises(NotFound):
        await chain.run_request(req("new"))
    assert metadata.get("new") is None


def test_claim_segment_new_refresh_and_next_hop() -> None:
    conn = Connection(id="client-id")
    assert claim_segment(conn, "nsc") == 0
    assert conn.id == "client-id"
    assert claim_segment(conn, "nsc") == 0  # refresh at the same hop
    assert claim_segment(conn, "nsmgr") == 1  # next hop appends
    nsmgr_id = conn.id
    assert nsmgr_id != "client-id"
    conn.path.index = 0
    assert claim_segment(conn, "nsmgr") == 1 and conn.id == nsmgr_id  # refresh from previous hop
    assert claim_segment(Connection(), "x", create=False) is None


def test_claim_segment_rejects_an_index_out_of_range() -> None:
    conn = Connection()
    conn.path.path_segments.add(name="a", id="1")
    conn.path.index = 5
    with pytest.raises(InvalidArgument, match=r"path\.index"):
        claim_segment(conn, "a")


async def test_updatepath_through_two_hops_restores_each_hops_id() -> None:
    seen: list[str] = []
    server = NetworkServiceChain(
        [UpdatePath("nsmgr"), Check(lambda r, c: seen.append(r.connection.id))]
    )

    class Hop(NetworkServiceElement):
        async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
            return await server.run_request(request)

    client = NetworkServiceChain([UpdatePath("nsc"), Hop()])
    first = req("")
    conn = await client.run_request(first)
    assert [s.name for s in conn.path.path_segments] == ["nsc", "nsmgr"]
    assert conn.path.index == 0 and conn.id == conn.path.path_segments[0].id
    assert seen == [conn.path.path_segments[1].id]
    refresh = NetworkServiceRequest(connection=conn)
    again = await client.run_request(refresh)
    assert [s.id for s in again.path.path_segments] == [s.id for s in conn.path.path_segments]


async def test_inject_error_after_n_calls_and_count() -> None:
    count = Count()
    chain = NetworkServiceChain([InjectError(NotFound("x"), on_close=True, after=1), count])
    await chain.run_request(req())
    with pytest.raises(NotFound):
        await chain.run_request(req())
    with pytest.raises(NotFound):
        await chain.run_close(req().connection)
    assert (count.requests, count.closes) == (1, 0)


@pytest.mark.parametrize(
    "factory", [Begin, Metadata, lambda: UpdatePath("hop"), Count, lambda: Check()],
    ids=["begin", "metadata", "updatepath", "count", "check"],
)
async def test_common_elements_conform(factory: object) -> None:
    assert await conformance_problems(factory) == []  # type: ignore[arg-type]


class Swallower(NetworkServiceElement):
    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        try:
            return await next.request(request)
        except Exception:
            return request.connection


class Leaker(NetworkServiceElement):
    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        self.tasks.append(asyncio.create_task(asyncio.Event().wait()))
        return await next.request(request)


async def test_conformance_catches_swallowed_errors_and_leaked_tasks() -> None:
    assert any("swallowed" in p for p in await conformance_problems(Swallower))
    leaker = Leaker()
    problems = await conformance_problems(lambda: leaker)
    assert any("task" in p for p in problems)
    for task in leaker.tasks:
        task.cancel()
    await asyncio.gather(*leaker.tasks, return_exceptions=True)
