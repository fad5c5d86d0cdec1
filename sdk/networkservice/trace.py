"""Element ``Trace``: an OpenTelemetry span for every Request and Close at this hop.

Contract: the call runs inside a span named ``<hop>.Request`` / ``<hop>.Close`` (attributes: the
hop kind, the connection id and the network service), the child of the span the caller sent in
its gRPC metadata (``ctx.headers``) or, without one, of the current span (an in-process caller)
or a new trace; ``Connect`` passes the current span on, so one request is one trace through
every hop. A failure marks the span with the error and is raised unchanged. Spans go wherever
:func:`sdk.tracing.configure_tracing` sent them — nowhere by default. Place it first.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext
from sdk.errors import FabricError
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.tracing import extract, tracer


class Trace(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, hop: str) -> None:
        self.hop = hop

    def _span(self, method: str, conn: Connection, ctx: CallContext) -> (
        trace.span.Span
    ):
        remote = bool(ctx.headers)
        return tracer().start_span(
            f"{self.hop}.{method}",
            context=extract(ctx.headers) if remote else None,
            kind=SpanKind.SERVER if remote else SpanKind.INTERNAL,
            attributes={"vwire.hop": self.hop, "vwire.connection_id": conn.id,
                        "vwire.network_service": conn.network_service},
        )

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        span = self._span("Request", request.connection, next.ctx)
        with trace.use_span(span, end_on_exit=True, record_exception=False):
            try:
                return await next.request(request)
            except FabricError as exc:
                span.set_status(Status(StatusCode.ERROR, f"{exc.code.name}: {exc}"))
                raise

    async def close(self, conn: Connection, next: NSCursor) -> None:
        span = self._span("Close", conn, next.ctx)
        with trace.use_span(span, end_on_exit=True, record_exception=False):
            try:
                await next.close(conn)
            except FabricError as exc:
                span.set_status(Status(StatusCode.ERROR, f"{exc.code.name}: {exc}"))
                raise
