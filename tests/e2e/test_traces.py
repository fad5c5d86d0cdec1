"""One request is one trace across processes (issue 16): a live fabric's processes export their
spans over OTLP (the standard OTEL_* variables) to a collector the test runs, and the client's
request shows up as one trace whose spans — from nsc, both nsmgrs, both
forwarders and the endpoint, each reported by its own process — chain parent to child."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.e2e.conftest import MakeFabric

CHAIN = ["client.Request", "nsmgr.Request", "forwarder.Request", "nsmgr.Request",
         "forwarder.Request", "endpoint.Request"]
SERVICES = ["nsc", "nsmgr", "forwarder", "nsmgr", "forwarder", "nse"]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace collector that keeps every span with the service that reported it."""

    def __init__(self) -> None:
        self.spans: list[tuple[Span, str]] = []
        self._arrived = asyncio.Event()

    async def Export(  # type: ignore[override]
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = next((a.value.string_value for a in resource_spans.resource.attributes
                            if a.key == "service.name"), "")
            for scope in resource_spans.scope_spans:
                self.spans.extend((span, service) for span in scope.spans)
        self._arrived.set()
        return trace_service_pb2.ExportTraceServiceResponse()

    async def until(self, done: Callable[[], bool], seconds: float) -> None:
        """Wait, at most ``seconds``, until ``done()`` holds after some export."""
        async with asyncio.timeout(seconds):
            while not done():
                await self._arrived.wait()
                self._arrived.clear()

    def chain(self, leaf_name: str) -> list[tuple[str, str]]:
        """(name, service) from the root down to the first span called ``leaf_name``."""
        by_id = {span.span_id: (span, service) for span, service in self.spans}
        found = next(((s, svc) for s, svc in self.spans if s.name == leaf_name), None)
        chain = []
        while found is not None:
            span, service = found
            chain.append((span.name, service))
            found = by_id.get(span.parent_span_id)
        return chain[::-1]


@pytest.fixture
async def collector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Collector]:
    sink = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    socket = tmp_path / "otlp.sock"
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    # The fabric's processes inherit these: unix sockets reach across network namespaces.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"unix://{socket}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    try:
        yield sink
    finally:
        await server.stop(0)


async def test_a_request_is_one_trace_across_the_fabrics_processes(
    make_fabric: MakeFabric, collector: Collector
) -> None:
    fabric = await make_fabric(nodes=2)
    await fabric.add_endpoint("nse-t", ["traced"], node=2)
    await fabric.add_client("nsc", node=1, urls=["kernel://traced/nsm0"])

    await collector.until(lambda: len(collector.chain("endpoint.Request")) >= len(CHAIN), 20)
    chain = collector.chain("endpoint.Request")
    assert [name for name, _ in chain] == CHAIN
    assert [service for _, service in chain] == SERVICES
