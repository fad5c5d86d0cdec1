"""What metrics and tracing cost a connection's setup, as a ratio to the setup itself.

Run: ``python -m bench.observability [--setups 40] [--calls 3000] [--json]``.

Measured in one run, on this machine: the per-call cost of the two elements every hop runs
(``Trace`` and ``Measure``) on a chain that does nothing else — once with no tracer provider
(the default: spans go nowhere) and once recording every span with the OpenTelemetry SDK (the
worst case: an in-memory exporter, no batching) — and the p50 of remote connection setups
through the in-process sandbox (client, two node managers passed twice, two forwarder stand-ins,
the endpoint: 8 hops, no kernel work). ``observability_share_of_setup`` is 8 hops times the per-call
cost divided by that setup p50: an upper bound of the share, since a real setup adds the data plane
(about 100 ms here) to the sandbox's figure. Goal: < 5 %. Bounded by its counts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import asdict, dataclass

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api.proto.networkservice_pb2 import NetworkServiceRequest
from bench.common import Metric, ms, percentile, report
from sdk import tracing
from sdk.chain import CallContext
from sdk.networkservice.core import NetworkServiceChain
from sdk.networkservice.measure import Measure
from sdk.networkservice.trace import Trace
from sdk.testing import Respond, Sandbox, request_for

HOPS = 8


@dataclass(frozen=True)
class Config:
    setups: int = 40
    calls: int = 3000


async def per_call(calls: int, observed: bool) -> float:
    """Seconds one call spends in the chain, with or without Trace and Measure."""
    chain = NetworkServiceChain(
        [Trace("bench"), Measure("bench"), Respond()] if observed else [Respond()])
    request = NetworkServiceRequest()
    request.connection.id = "bench"
    start = time.perf_counter()
    for _ in range(calls):
        await chain.run_request(request, CallContext())
    return (time.perf_counter() - start) / calls


async def setup_p50(setups: int) -> float:
    """p50 seconds of a remote setup through the sandbox."""
    samples = []
    async with Sandbox() as sandbox:
        n1, n2 = await sandbox.node(), await sandbox.node()
        await sandbox.endpoint(n2, "nse-bench")
        client = sandbox.client(n1)
        for i in range(setups):
            start = time.perf_counter()
            conn = await client.chain.run_request(request_for("sandbox", f"b-{i}"), CallContext())
            samples.append(time.perf_counter() - start)
            await client.chain.run_close(conn, CallContext())
    return percentile(samples, 50)


async def measure(config: Config) -> list[Metric]:
    print("measuring per-call cost without a tracer provider...", file=sys.stderr)
    bare = await per_call(config.calls, observed=False)
    default = await per_call(config.calls, observed=True) - bare
    print("... and with the OpenTelemetry SDK recording every span", file=sys.stderr)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    tracing.use_provider(provider)
    try:
        recording = await per_call(config.calls, observed=True) - bare
    finally:
        tracing.use_provider(None)
        provider.shutdown()
    print(f"timing {config.setups} remote setups through the sandbox", file=sys.stderr)
    setup = await setup_p50(config.setups)
    return [
        Metric("per_call_cost_default", default * 1e6, "us"),
        Metric("per_call_cost_recording", recording * 1e6, "us"),
        Metric("sandbox_setup_p50", ms(setup), "ms"),
        Metric("observability_share_of_setup", 100 * HOPS * default / setup, "%", goal=5.0),
        Metric("observability_share_recording", 100 * HOPS * recording / setup, "%", goal=5.0),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.observability", description=__doc__)
    parser.add_argument("--setups", type=int, default=Config.setups)
    parser.add_argument("--calls", type=int, default=Config.calls)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    config = Config(args.setups, args.calls)
    metrics = asyncio.run(measure(config))
    print(report(metrics, asdict(config), args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
