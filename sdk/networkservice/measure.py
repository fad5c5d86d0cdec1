"""Element ``Measure``: Prometheus counts and durations of the calls at this hop.

Contract: every Request and Close that passes is counted in ``vwire_networkservice_calls``
(labels: the hop kind, the method, the gRPC status name it ended with — ``OK``, or the fabric
error's status, ``UNKNOWN`` for anything else) and timed in
``vwire_networkservice_call_duration_seconds``; at a client that is the setup time of a
connection. The outcome is unchanged. Place it right behind ``Trace``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import FabricError
from sdk.metrics import CALL_SECONDS, REQUESTS
from sdk.networkservice.core import NetworkServiceElement, NSCursor


class Measure(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, hop: str) -> None:
        self.hop = hop

    async def _measured(self, method: str, call: Awaitable[Connection | None]) -> (
        Connection | None
    ):
        start = time.perf_counter()
        code = "UNKNOWN"
        try:
            result = await call
            code = "OK"
            return result
        except FabricError as exc:
            code = exc.code.name
            raise
        finally:
            REQUESTS.labels(self.hop, method, code).inc()
            CALL_SECONDS.labels(self.hop, method).observe(time.perf_counter() - start)

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        reply = await self._measured("Request", next.request(request))
        assert reply is not None
        return reply

    async def close(self, conn: Connection, next: NSCursor) -> None:
        await self._measured("Close", next.close(conn))
