"""A conformance check any NetworkService element can be run through.

:func:`conformance_problems` builds chains around a fresh element (from ``factory``) and checks
the behaviour every element owes the chain, returning a list of problems (empty = conforms):

1. a request comes back as a Connection for the same network service, and the element's
   downstream neighbour saw the request exactly once;
2. a refresh (the same request again) succeeds;
3. close after request succeeds and reaches downstream exactly once;
4. an error raised downstream reaches the caller unchanged (not swallowed or wrapped), and a
   following close of that connection does not fail;
5. the element leaves no asyncio task running after the calls return.

``prepare`` may adjust the request an element needs (e.g. mechanism preferences).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext
from sdk.errors import FabricError
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement
from sdk.testing.elements import Count, InjectError


class _ProbeError(FabricError):
    """The error the check injects downstream."""


def _request(conn_id: str, prepare: Callable[[NetworkServiceRequest], None] | None) -> (
    NetworkServiceRequest
):
    request = NetworkServiceRequest()
    request.connection.id = conn_id
    request.connection.network_service = "conformance"
    if prepare:
        prepare(request)
    return request


async def conformance_problems(
    factory: Callable[[], NetworkServiceElement],
    prepare: Callable[[NetworkServiceRequest], None] | None = None,
    deadline_seconds: float = 5.0,
) -> list[str]:
    """Run the checks in the module docstring; returns the problems found."""
    problems: list[str] = []
    before = asyncio.all_tasks()

    def ctx() -> CallContext:
        return CallContext.with_timeout(deadline_seconds)

    count = Count()
    chain = NetworkServiceChain([factory(), count])
    request = _request("conformance-1", prepare)
    conn: Connection | None = None
    try:
        conn = await chain.run_request(request, ctx())
        if conn.network_service != "conformance":
            problems.append(f"request returned network_service {conn.network_service!r}")
        if count.requests != 1:
            problems.append(f"downstream saw {count.requests} requests for one request")
    except Exception as exc:
        problems.append(f"request failed: {exc!r}")
    if conn is not None:
        try:
            refresh = NetworkServiceRequest()
            refresh.CopyFrom(request)
            refresh.connection.CopyFrom(conn)
            conn = await chain.run_request(refresh, ctx())
        except Exception as exc:
            problems.append(f"refresh failed: {exc!r}")
        try:
            await chain.run_close(conn, ctx())
            if count.closes != 1:
                problems.append(f"downstream saw {count.closes} closes for one close")
        except Exception as exc:
            problems.append(f"close failed: {exc!r}")

    failing = NetworkServiceChain([factory(), InjectError(_ProbeError("probe"))])
    failed_request = _request("conformance-2", prepare)
    try:
        await failing.run_request(failed_request, ctx())
        problems.append("a downstream error was swallowed")
    except _ProbeError:
        pass
    except Exception as exc:
        problems.append(f"a downstream error came back changed: {exc!r}")
    try:
        await failing.run_close(failed_request.connection, ctx())
    except Exception as exc:
        problems.append(f"close after a failed request failed: {exc!r}")

    await asyncio.sleep(0)  # let cancelled tasks finish before looking
    leaked = [t for t in asyncio.all_tasks() - before if not t.done()]
    if leaked:
        problems.append(f"left {len(leaked)} task(s) running: {[t.get_name() for t in leaked]}")
    return problems
