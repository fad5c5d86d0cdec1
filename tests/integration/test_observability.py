"""Metrics and traces (issue 16): every hop is a span of one trace with the right parents, calls
are counted and timed by hop, method and status, and a process serves its metrics over HTTP."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from sdk import tracing
from sdk.chain import CallContext
from sdk.errors import NotFound
from sdk.testing import Sandbox, request_for


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield exporter
    tracing.use_provider(None)
    provider.shutdown()


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox() as box:
        yield box


def calls(hop: str, method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "vwire_networkservice_calls_total", {"hop": hop, "method": method, "code": code})
    return value or 0.0


async def test_one_request_is_one_trace_through_every_hop(
    sandbox: Sandbox, spans: InMemorySpanExporter
) -> None:
    n1, n2 = await sandbox.node(), await sandbox.node()
    await sandbox.endpoint(n2, "nse-b")
    client = sandbox.client(n1)
    conn = await client.chain.run_request(request_for("sandbox", "t-1"), CallContext())
    requests = [s for s in spans.get_finished_spans() if s.name.endswith(".Request")]
    assert {s.context.trace_id for s in requests if s.context} and len(
        {s.context.trace_id for s in requests if s.context}) == 1, "one trace"
    by_id = {s.context.span_id: s for s in requests if s.context}

    def chain_of(span: ReadableSpan) -> list[str]:
        names = [span.name]
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            names.append(span.name)
        return names[::-1]

    leaf = next(s for s in requests if s.name == "endpoint.Request")
    assert chain_of(leaf) == [
        "client.Request", "nsmgr.Request", "forwarder.Request", "nsmgr.Request",
        "forwarder.Request", "endpoint.Request",
    ]
    assert all(s.attributes and s.attributes["vwire.connection_id"] for s in requests)
    await client.chain.run_close(conn, CallContext())
    closes = [s for s in spans.get_finished_spans() if s.name == "endpoint.Close"]
    assert len(closes) == 1


async def test_calls_are_counted_by_hop_method_and_status(sandbox: Sandbox) -> None:
    n1 = await sandbox.node()
    await sandbox.endpoint(n1, "nse-a")
    before = {hop: calls(hop, "Request", "OK") for hop in ("client", "nsmgr", "endpoint")}
    refused = calls("nsmgr", "Request", "NOT_FOUND")
    client = sandbox.client(n1)
    conn = await client.chain.run_request(request_for("sandbox", "m-1"), CallContext())
    assert calls("client", "Request", "OK") == before["client"] + 1
    assert calls("nsmgr", "Request", "OK") == before["nsmgr"] + 1  # one pass: no hand-back
    assert calls("endpoint", "Request", "OK") == before["endpoint"] + 1
    with pytest.raises(NotFound):
        await client.chain.run_request(request_for("no-such-service", "m-2"), CallContext())
    assert calls("nsmgr", "Request", "NOT_FOUND") == refused + 1
    await client.chain.run_close(conn, CallContext())


async def test_a_process_serves_its_metrics_over_http(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "registry", "--listen", f"unix://{tmp_path}/registry.sock",
        "--store", "memory://", "--metrics-listen", "127.0.0.1:0", "--log-level", "info",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        url = ""
        async with asyncio.timeout(15):
            while not url:
                line = await proc.stderr.readline()
                assert line, f"registry exited (status {await proc.wait()})"
                event = json.loads(line)
                if event["event"] == "serving metrics":
                    url = event["url"]
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=5).read().decode())
        assert 'vwire_registry_records{kind="nse"} 0.0' in body
        assert "vwire_registry_watchers" in body and "vwire_authz_denied_total" in body
        # prometheus_client's own collectors, registered when its __init__ ran (sdk.lean)
        assert "process_resident_memory_bytes" in body and "python_gc_objects_collected" in body
    finally:
        proc.terminate()
        await proc.communicate()
