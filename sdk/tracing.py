"""OpenTelemetry traces across hops: one request is one trace through every hop.

:func:`configure_tracing` installs the SDK's tracer provider with an OTLP exporter when the
standard ``OTEL_*`` variables ask for one (``OTEL_TRACES_EXPORTER=otlp`` or an
``OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT``), and nothing otherwise: without it, spans cost next to
nothing and go nowhere. The trace context travels hop to hop in gRPC metadata (W3C
``traceparent``/``tracestate``): :func:`inject` fills the outgoing metadata of a call from the
current context, :func:`extract` reads a server call's incoming headers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context

#: The instrumentation scope of the fabric's spans.
TRACER_NAME = "vwire"
#: Incoming gRPC metadata keys that carry the trace context.
TRACE_HEADERS = ("traceparent", "tracestate")


_provider: trace.TracerProvider | None = None


def use_provider(provider: trace.TracerProvider | None) -> None:
    """Send the fabric's spans to ``provider`` instead of the global one (None: back to it) —
    for tests and for programs that embed the fabric's chains."""
    global _provider
    _provider = provider


def tracer() -> trace.Tracer:
    """The tracer of the fabric's spans."""
    return trace.get_tracer(TRACER_NAME, tracer_provider=_provider)


def wanted() -> bool:
    """Whether the environment asks for trace export."""
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "")
    if exporter == "none":
        return False
    return exporter == "otlp" or any(
        os.environ.get(name) for name in
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing(service: str) -> bool:
    """Export this process's spans over OTLP when the environment asks for it (service name
    ``service`` unless ``OTEL_SERVICE_NAME`` says otherwise); returns whether it does."""
    if not wanted():
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME", service)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


def inject() -> list[tuple[str, str]]:
    """gRPC metadata carrying the current trace context (empty when there is none)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def extract(headers: Mapping[str, str]) -> Context:
    """The trace context a caller sent in ``headers`` (an empty context when it sent none)."""
    return propagate.extract(dict(headers))
