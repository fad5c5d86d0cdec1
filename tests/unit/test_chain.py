"""The chain core: order, tail, context, tracing, deadlines."""

from __future__ import annotations

import asyncio
import inspect
import sys
import time

import pytest
import structlog

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext, elements_of
from sdk.errors import DeadlineExceeded
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement, NSCursor
from sdk.testing import Check, Count, Respond


class Tag(NetworkServiceElement):
    """Appends its tag to a label on the way in and to another on the way out."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        labels = request.connection.labels
        labels["in"] = labels.get("in", "") + self.tag
        conn = await next.request(request)
        conn.labels["out"] = conn.labels.get("out", "") + self.tag
        return conn


def req(conn_id: str = "c1") -> NetworkServiceRequest:
    request = NetworkServiceRequest()
    request.connection.id = conn_id
    return request


async def test_elements_run_in_order_and_unwind_in_reverse() -> None:
    chain = NetworkServiceChain([Tag("a"), Tag("b"), Tag("c")])
    conn = await chain.run_request(req())
    assert conn.labels["in"] == "abc"
    assert conn.labels["out"] == "cba"


async def test_tail_returns_the_connection_and_close_is_a_no_op() -> None:
    chain = NetworkServiceChain([])
    conn = await chain.run_request(req("x"))
    assert conn.id == "x"
    await chain.run_close(conn)


async def test_elements_of_flattens_groups() -> None:
    count = Count()
    group = [Tag("a"), Tag("b")]
    chain = NetworkServiceChain(elements_of(group, Tag("c"), (count,)))
    conn = await chain.run_request(req())
    assert conn.labels["in"] == "abc"
    assert count.requests == 1


async def test_context_is_shared_by_every_element_of_a_call() -> None:
    seen: list[CallContext] = []
    chain = NetworkServiceChain([
        Check(lambda r, ctx: seen.append(ctx)),
        Check(lambda r, ctx: seen.append(ctx)),
    ])
    ctx = CallContext(peer="unix:test")
    await chain.run_request(req(), ctx)
    assert seen == [ctx, ctx]
    assert seen[0] is seen[1]


async def test_terminal_element_stops_the_chain() -> None:
    count = Count()
    chain = NetworkServiceChain([Respond(lambda c: c.labels.update(answered="yes")), count])
    conn = await chain.run_request(req())
    assert conn.labels["answered"] == "yes"
    assert count.requests == 0


class AwaitDepth(NetworkServiceElement):
    """Answers with the number of coroutine frames its call runs under (its own included)."""

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        depth, frame = 0, sys._getframe()
        while frame is not None:
            depth += bool(frame.f_code.co_flags & inspect.CO_COROUTINE)
            frame = frame.f_back
        conn = Connection()
        conn.labels["depth"] = str(depth)
        return conn


async def test_a_pass_makes_one_coroutine_per_element() -> None:
    """Every pass through a chain runs at every hop of every call, so the cursor hands on the
    element's own coroutine instead of wrapping it in two of its own."""

    async def depth_through(passing: int) -> int:
        chain = NetworkServiceChain([*(Tag(str(i)) for i in range(passing)), AwaitDepth()])
        conn = await asyncio.create_task(chain.run_request(req()))
        return int(conn.labels["depth"])

    assert await depth_through(10) - await depth_through(0) == 10


async def test_trace_logs_each_element() -> None:
    with structlog.testing.capture_logs() as logs:
        await NetworkServiceChain([Tag("a"), Count()], trace=True).run_request(req())
    entered = [e["element"] for e in logs if e["event"] == "chain.enter"]
    assert entered == ["Tag", "Count", "_Tail"]
    assert all("seconds" in e for e in logs if e["event"] == "chain.exit")


async def test_trace_is_silent_when_off() -> None:
    with structlog.testing.capture_logs() as logs:
        await NetworkServiceChain([Tag("a")]).run_request(req())
    assert logs == []


def test_deadline_remaining_and_expiry() -> None:
    assert CallContext().remaining() is None
    left = CallContext.with_timeout(10).remaining()
    assert left is not None and 9 < left <= 10
    with pytest.raises(DeadlineExceeded):
        CallContext(deadline=time.monotonic() - 1).remaining()
