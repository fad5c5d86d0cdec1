"""Element ``Retry``: when an attempt fails, try another endpoint, with bounded back-off.

Contract: sends the request on; when that fails with a :class:`sdk.errors.FabricError` that another
endpoint could cure, it reports the failure of the endpoint the attempt used to the circuit
breaker, rules that endpoint out for this request, asks for the old downstream path to be left
(:func:`sdk.networkservice.rebuild.request_rebuild`), clears the endpoint name and tries again
after a jittered exponential pause — at most ``attempts`` times and never past the deadline. A
success is reported to the breaker. Not retried: errors of the request itself (invalid, not
permitted, unauthenticated, clashing with the client's namespace) and other exceptions, and a node
without a forwarder (:class:`NoForwarder`: no endpoint is to blame); when the selection behind
finds no endpoint left (:class:`NoEndpoint`) after a failure, the failure is raised, since why the
tried endpoints failed says more. Each attempt's own elements undo their work. Place it where this
hop chooses endpoints, in front of ``Discover``/``SelectEndpoint``. Close passes through.
"""

from __future__ import annotations

import asyncio

import structlog

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import (
    AlreadyExists,
    FabricError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.discover import NoEndpoint
from sdk.networkservice.forwarder import NoForwarder
from sdk.networkservice.rebuild import request_rebuild
from sdk.networkservice.select import exclude
from sdk.select.backoff import delays
from sdk.select.breaker import CircuitBreaker

_log = structlog.get_logger("sdk.retry")

#: Errors another endpoint would not cure: the request is invalid or not permitted, or it clashes
#: with what already exists in the client's own namespace.
CLIENT_FAULTS = (InvalidArgument, PermissionDenied, Unauthenticated, AlreadyExists)


class Retry(NetworkServiceElement):
    """See the module docstring."""

    def __init__(
        self, breaker: CircuitBreaker, attempts: int = 3, base: float = 0.05, cap: float = 0.5
    ) -> None:
        self.breaker = breaker
        self.attempts = attempts
        self.base = base
        self.cap = cap

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = request.connection
        pauses = list(delays(self.attempts, self.base, self.cap))
        failure: FabricError | None = None
        for attempt, pause in enumerate(pauses):
            try:
                reply = await next.request(request)
            except NoEndpoint:
                if failure is None:
                    raise
                raise failure from None
            except (*CLIENT_FAULTS, NoForwarder):
                raise  # another endpoint would not help; nor is this one to blame
            except FabricError as exc:
                failure = exc
                failed = conn.network_service_endpoint_name
                self.breaker.record_failure(failed)
                exclude(next.ctx, failed)
                request_rebuild(next.ctx)
                conn.network_service_endpoint_name = ""
                _log.warning("request failed, choosing another endpoint", endpoint=failed,
                             attempt=attempt + 1, error=str(exc))
                remaining = next.ctx.remaining()
                if attempt + 1 == self.attempts or (remaining is not None and remaining < pause):
                    raise
                await asyncio.sleep(pause)  # back-off before the next attempt, not a sync wait
                continue
            self.breaker.record_success(reply.network_service_endpoint_name)
            return reply
        raise AssertionError("unreachable: the last attempt returns or raises")
