"""``Monitor.events``: each subscriber judges an event once, and gets a copy of its own.

A subscriber's visibility check reads every path token of the connection (for an mTLS caller,
whether the path names it), so it is asked once per event and subscriber, when the event is
offered, not again when the stream sends it. Each subscriber's event is its own copy: the
service redacts tokens in place for local callers, which must not reach the others.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

from api.proto.connection_pb2 import (
    DELETE,
    INITIAL_STATE_TRANSFER,
    UPDATE,
    Connection,
    ConnectionEvent,
    MonitorScopeSelector,
    Path,
    PathSegment,
)
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement, NSCursor
from sdk.networkservice.monitor import Monitor


class Answer(NetworkServiceElement):
    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        return request.connection

    async def close(self, conn: Connection, next: NSCursor) -> None:
        return None


def connection(conn_id: str, segment: str) -> Connection:
    return Connection(id=conn_id, path=Path(path_segments=[
        PathSegment(id=segment, name="client", token="header.claims.signature")]))


async def take(stream: AsyncIterator[ConnectionEvent]) -> ConnectionEvent:
    return await asyncio.wait_for(anext(stream), 5)


async def test_visibility_is_judged_once_per_event_and_each_subscriber_gets_a_copy() -> None:
    monitor = Monitor()
    chain = NetworkServiceChain([monitor, Answer()])
    asked: Counter[str] = Counter()

    def visible_to(name: str) -> Callable[[Connection], bool]:
        def visible(conn: Connection) -> bool:
            asked[name] += 1
            return conn.id != "hidden"
        return visible

    first = monitor.events(MonitorScopeSelector(), visible_to("first"))
    second = monitor.events(MonitorScopeSelector(), visible_to("second"))
    assert (await take(first)).type == INITIAL_STATE_TRANSFER
    assert (await take(second)).type == INITIAL_STATE_TRANSFER
    asked.clear()

    await chain.run_request(NetworkServiceRequest(connection=connection("hidden", "s0")))
    await chain.run_request(NetworkServiceRequest(connection=connection("shown", "s1")))
    await chain.run_close(connection("shown", "s1"))
    got = [await take(first), await take(first)]
    other = [await take(second), await take(second)]

    assert [(e.type, list(e.connections)) for e in got] == [(UPDATE, ["shown"]),
                                                           (DELETE, ["shown"])]
    assert [(e.type, list(e.connections)) for e in other] == [(UPDATE, ["shown"]),
                                                             (DELETE, ["shown"])]
    assert asked == {"first": 3, "second": 3}, "one check per event offered, none when sent"
    got[0].connections["shown"].path.path_segments[0].token = "redacted"
    assert other[0].connections["shown"].path.path_segments[0].token == "header.claims.signature"
    await first.aclose()
    await second.aclose()


async def test_a_selector_still_limits_what_a_subscriber_is_sent() -> None:
    monitor = Monitor()
    chain = NetworkServiceChain([monitor, Answer()])
    stream = monitor.events(MonitorScopeSelector(path_segments=[PathSegment(id="s1")]))
    assert not (await take(stream)).connections
    await chain.run_request(NetworkServiceRequest(connection=connection("other", "s0")))
    await chain.run_request(NetworkServiceRequest(connection=connection("mine", "s1")))
    event = await take(stream)
    assert list(event.connections) == ["mine"]
    await stream.aclose()
