"""A conformance check any NetworkService element can be run through.

:func:`conformance_problems` builds chains around a fresh element (from ``factory``) and checks
the behaviour every element owes the chain, returning a list of problems (empty = conforms):

1. a request comes back as a Connection for the same network service, and the element's
   downstream neighbour saw the request exactly once;
2. a refresh (the same request again) succeeds;
3. close after request succeeds and reaches downstream exactly once;
4. an error raised downstream reaches the caller unchanged (not swallowed or wrapped), and a
   following close of that connection does not fail;
5. the element leaves no asyncio task running after the calls return (close included).

``prepare`` may adjust the request an element needs (e.g. mechanism preferences); ``front``
makes the elements placed in front of it (e.g. ``Metadata``, or a stand-in for the element that
hands it a fact), fresh for every chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext
from sdk.errors import FabricError
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement
from sdk.testing.elements import Count, InjectError

Factory = Callable[[], NetworkServiceElement]
Front = Callable[[], Sequence[NetworkServiceElement]]


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


class _Check:
    """One run of the checks, collecting problems."""

    def __init__(self, factory: Factory, front: Front, seconds: float,
                 prepare: Callable[[NetworkServiceRequest], None] | None) -> None:
        self.factory, self.front, self.seconds, self.prepare = factory, front, seconds, prepare
        self.problems: list[str] = []

    def ctx(self) -> CallContext:
        return CallContext.with_timeout(self.seconds)

    def chain(self, tail: NetworkServiceElement) -> NetworkServiceChain:
        return NetworkServiceChain([*self.front(), self.factory(), tail])

    async def request_refresh_close(self) -> None:
        count = Count()
        chain = self.chain(count)
        request = _request("conformance-1", self.prepare)
        try:
            conn = await chain.run_request(request, self.ctx())
        except Exception as exc:
            self.problems.append(f"request failed: {exc!r}")
            return
        if conn.network_service != "conformance":
            self.problems.append(f"request returned network_service {conn.network_service!r}")
        if count.requests != 1:
            self.problems.append(f"downstream saw {count.requests} requests for one request")
        conn = await self._refresh(chain, request, conn)
        try:
            await chain.run_close(conn, self.ctx())
        except Exception as exc:
            self.problems.append(f"close failed: {exc!r}")
            return
        if count.closes != 1:
            self.problems.append(f"downstream saw {count.closes} closes for one close")

    async def _refresh(self, chain: NetworkServiceChain, request: NetworkServiceRequest,
                       conn: Connection) -> Connection:
        refresh = NetworkServiceRequest()
        refresh.CopyFrom(request)
        refresh.connection.CopyFrom(conn)
        try:
            return await chain.run_request(refresh, self.ctx())
        except Exception as exc:
            self.problems.append(f"refresh failed: {exc!r}")
            return conn

    async def downstream_error(self) -> None:
        failing = self.chain(InjectError(_ProbeError("probe")))
        request = _request("conformance-2", self.prepare)
        try:
            await failing.run_request(request, self.ctx())
            self.problems.append("a downstream error was swallowed")
        except _ProbeError:
            pass
        except Exception as exc:
            self.problems.append(f"a downstream error came back changed: {exc!r}")
        try:
            await failing.run_close(request.connection, self.ctx())
        except Exception as exc:
            self.problems.append(f"close after a failed request failed: {exc!r}")


async def conformance_problems(
    factory: Factory,
    prepare: Callable[[NetworkServiceRequest], None] | None = None,
    deadline_seconds: float = 5.0,
    front: Front = tuple,
) -> list[str]:
    """Run the checks in the module docstring; returns the problems found."""
    before = asyncio.all_tasks()
    check = _Check(factory, front, deadline_seconds, prepare)
    await check.request_refresh_close()
    await check.downstream_error()
    await asyncio.sleep(0)  # let cancelled tasks finish before looking
    leaked = [t for t in asyncio.all_tasks() - before if not t.done()]
    if leaked:
        check.problems.append(
            f"left {len(leaked)} task(s) running: {[t.get_name() for t in leaked]}"
        )
    return check.problems
