"""Registry benchmark: Register throughput, Find latency and watch fan-out over gRPC.

Run: ``python -m bench.registry [--endpoints 10000] [--watchers 100] [--store sqlite|memory]
[--etcd] [--json]``.

Starts a real registry in-process on a temporary Unix socket (SQLite store in a temporary
directory by default), then measures:

- Register throughput: N endpoints (distinct names, ``N / 25`` services, labels) with at most
  ``--concurrency`` (≤ 64) calls in flight on one channel, against the peer: as many unary echo
  calls of an endpoint's size, as concurrently (``register_vs_grpc_unary_throughput``);
- Find latency (p50/p99): ``--finds`` finds by name and as many by service name, one at a time,
  each returning one to a few dozen records, with all N registered;
- the peer: the same call shape (one server-streaming call, one reply) to a trivial echo servicer
  on another Unix socket in the same process, i.e. the raw gRPC round-trip cost; the ratio
  ``find_p50_vs_grpc_roundtrip`` says how much the registry adds on top of gRPC itself;
- fan-out: ``--watchers`` watching Finds on one service; after all have their initial state, one
  registration per round; the time until every watcher has received it (p50/p99/max).

With ``--etcd`` the same run then starts a local single-member etcd (Debian's ``etcd-server``,
:mod:`lab.etcd`) and measures again with the registry on it, and compares register throughput of
three registry replicas (separate processes over that etcd, a third of the population each) with
one such process; it prints the etcd figures and the ratios etcd/SQLite (``--store``) and three
replicas/one.

All traffic stays on local Unix sockets and loopback; every loop is bounded by a count and by
``--max-seconds`` (per store).
Client and server share one process and event loop, so figures include both sides' CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from asyncio.subprocess import Process
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from api.proto import registry_pb2_grpc
from api.proto.registry_pb2 import (
    NetworkServiceEndpoint,
    NetworkServiceEndpointQuery,
    NetworkServiceEndpointResponse,
    NetworkServiceLabels,
)
from bench.common import Deadline, Metric, ms, percentile, progress, report
from lab.etcd import EtcdCluster
from registry.app import Registry
from registry.store import open_store
from sdk import log
from sdk.grpcutil import parse_address, unix_socket_accepts

#: Most calls in flight on one channel (NOTES.md: thousands at once get CANCELLED).
NAME = "bench.registry"
MAX_IN_FLIGHT = 64
#: Endpoints per service in the registered population.
PER_SERVICE = 25
#: Goals of the registry (design targets at 10k endpoints).
FIND_P99_GOAL_MS = 10.0
FANOUT_GOAL_MS = 1000.0
#: Bound on any single wait for a reply or an event.
WAIT = 30.0
#: Every record comes from one (anonymous) caller: lift the per-identity quota (10,000 records
#: by default, which the seed of the fan-out phase would exceed at 10,000 endpoints).
QUOTA = 10_000_000
QUOTA_BYTES = 16 * 1024 * 1024 * 1024

FANOUT_SERVICE = "fanout"
ECHO_METHOD = "/bench.Echo/Find"
ECHO_UNARY = "/bench.Echo/Call"


@dataclass(frozen=True)
class Config:
    """What one run measures."""

    endpoints: int = 10_000
    watchers: int = 100
    finds: int = 1_000
    rounds: int = 20
    concurrency: int = MAX_IN_FLIGHT
    store: str = "sqlite"
    max_seconds: float = 300.0
    seed: int = 1

    @property
    def services(self) -> int:
        return max(1, self.endpoints // PER_SERVICE)


@dataclass
class Results:
    """Raw measurements, turned into metrics by :func:`metrics_of`."""

    registered: int = 0
    register_seconds: float = 0.0
    echo_calls: int = 0
    echo_seconds: float = 0.0
    find_by_name: list[float] = field(default_factory=list)
    find_by_service: list[float] = field(default_factory=list)
    records_per_service_find: list[int] = field(default_factory=list)
    echo: list[float] = field(default_factory=list)
    fanout: list[float] = field(default_factory=list)


# -- records ------------------------------------------------------------------------------------


def endpoint(i: int, services: int) -> NetworkServiceEndpoint:
    """The ``i``-th endpoint of the population: one service out of ``services``, two labels."""
    service = f"svc-{i % services}"
    return NetworkServiceEndpoint(
        name=f"nse-{i:06d}",
        network_service_names=[service],
        network_service_labels={
            service: NetworkServiceLabels(labels={"app": f"app-{i % 10}", "zone": f"z{i % 3}"})
        },
        url=f"tcp://10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:5001",
    )


def query(template: NetworkServiceEndpoint, watch: bool = False) -> NetworkServiceEndpointQuery:
    return NetworkServiceEndpointQuery(network_service_endpoint=template, watch=watch)


# -- servers ------------------------------------------------------------------------------------


async def start_registry(workdir: Path, store: str) -> Registry:
    """A registry on ``workdir/registry.sock`` with a SQLite (``workdir``) or memory store, or
    the store at ``store`` when it is a URL."""
    url = {"sqlite": f"sqlite:///{workdir / 'registry.db'}", "memory": "memory://"}.get(
        store, store
    )
    registry = Registry(open_store(url), default_ttl=3600.0, max_ttl=3600.0,
                        max_records_per_identity=QUOTA, max_bytes_per_identity=QUOTA_BYTES)
    await registry.start([parse_address(f"unix://{workdir / 'registry.sock'}")])
    return registry


def _echo_handler() -> grpc.GenericRpcHandler:
    async def find(request: bytes, context: Any) -> Any:
        yield request

    async def call(request: bytes, context: Any) -> bytes:
        return request

    # No serializers: bytes in, bytes out.
    stream: grpc.RpcMethodHandler[Any, Any] = grpc.unary_stream_rpc_method_handler(find)
    unary: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(call)
    return grpc.method_handlers_generic_handler("bench.Echo", {"Find": stream, "Call": unary})


async def start_echo(workdir: Path) -> tuple[grpc.aio.Server, str]:
    """The peer: a trivial server-streaming echo servicer on its own Unix socket."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_echo_handler(),))
    target = f"unix://{workdir / 'echo.sock'}"
    server.add_insecure_port(target)
    await server.start()
    return server, target


# -- phases -------------------------------------------------------------------------------------


async def register_all(stub: Any, config: Config, deadline: Deadline) -> tuple[int, float]:
    """Register the population with bounded concurrency; returns (count, seconds)."""
    return await concurrently(
        lambda i: stub.Register(endpoint(i, config.services), timeout=WAIT), config, deadline
    )


async def echo_throughput(
    channel: grpc.aio.Channel, payload: bytes, config: Config, deadline: Deadline
) -> tuple[int, float]:
    """The peer of Register: as many unary echo calls, as concurrently."""
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ECHO_UNARY)
    return await concurrently(lambda _: call(payload, timeout=WAIT), config, deadline)


async def concurrently(
    make_call: Callable[[int], Awaitable[object]], config: Config, deadline: Deadline
) -> tuple[int, float]:
    """Make ``config.endpoints`` calls with ``config.concurrency`` in flight; (count, seconds)."""
    next_index = iter(range(config.endpoints))
    done = 0

    async def worker() -> None:
        nonlocal done
        for i in next_index:
            if deadline.expired():
                return
            await make_call(i)
            done += 1

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(config.concurrency, MAX_IN_FLIGHT)):
            group.create_task(worker())
    return done, time.perf_counter() - start


async def timed_find(stub: Any, request: NetworkServiceEndpointQuery) -> tuple[float, int]:
    """One non-watching Find read to its end: (seconds, records returned)."""
    start = time.perf_counter()
    count = 0
    async for _ in stub.Find(request, timeout=WAIT):
        count += 1
    return time.perf_counter() - start, count


async def find_latencies(
    stub: Any, templates: Sequence[NetworkServiceEndpoint], deadline: Deadline
) -> tuple[list[float], list[int]]:
    """Latency of a sequential Find per template (stops early if the budget runs out)."""
    latencies: list[float] = []
    counts: list[int] = []
    for template in templates:
        if deadline.expired():
            break
        seconds, count = await timed_find(stub, query(template))
        assert count >= 1, f"find {template.name or list(template.network_service_names)} empty"
        latencies.append(seconds)
        counts.append(count)
    return latencies, counts


async def echo_latencies(channel: grpc.aio.Channel, payload: bytes, count: int,
                         deadline: Deadline) -> list[float]:
    """Round-trip latency of the peer: one server-streaming call with one reply."""
    call: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(ECHO_METHOD)
    latencies: list[float] = []
    for _ in range(count):
        if deadline.expired():
            break
        start = time.perf_counter()
        replies = [r async for r in call(payload, timeout=WAIT)]
        latencies.append(time.perf_counter() - start)
        assert replies == [payload]
    return latencies


class FanOut:
    """``n`` watchers of one service; records when each receives each round's registration."""

    def __init__(self, stub: Any, n: int) -> None:
        self.stub = stub
        self.n = n
        self.ready = 0
        self.all_ready = asyncio.Event()
        self.received: dict[str, int] = {}
        self.complete: dict[str, asyncio.Event] = {}
        self.calls: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        template = NetworkServiceEndpoint(network_service_names=[FANOUT_SERVICE])
        for i in range(self.n):
            call = self.stub.Find(query(template, watch=True))
            self.calls.append(call)
            self.tasks.append(asyncio.create_task(self._read(call), name=f"watcher-{i}"))

    async def _read(self, call: Any) -> None:
        first = True
        async for response in call:
            if first:  # the seed record: this watcher has its initial state
                first = False
                self.ready += 1
                if self.ready == self.n:
                    self.all_ready.set()
                continue
            name = response.network_service_endpoint.name
            self.received[name] = self.received.get(name, 0) + 1
            if self.received[name] == self.n and name in self.complete:
                self.complete[name].set()

    async def round(self, name: str) -> float:
        """Register ``name`` for the watched service; seconds until all watchers had it."""
        self.complete[name] = asyncio.Event()
        record = NetworkServiceEndpoint(
            name=name, network_service_names=[FANOUT_SERVICE], url="tcp://10.255.0.1:5001"
        )
        start = time.perf_counter()
        await self.stub.Register(record, timeout=WAIT)
        async with asyncio.timeout(WAIT):
            await self.complete[name].wait()
        return time.perf_counter() - start

    async def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def fanout_latencies(stub: Any, watch_stub: Any, config: Config,
                           deadline: Deadline) -> list[float]:
    """Open the watchers, wait for their initial state, then time ``config.rounds`` changes."""
    await stub.Register(
        NetworkServiceEndpoint(name="fanout-seed", network_service_names=[FANOUT_SERVICE],
                               url="tcp://10.255.0.1:5001"),
        timeout=WAIT,
    )
    fan = FanOut(watch_stub, config.watchers)
    fan.start()
    try:
        async with asyncio.timeout(WAIT):
            await fan.all_ready.wait()
        latencies = []
        for r in range(config.rounds):
            if deadline.expired():
                break
            latencies.append(await fan.round(f"fanout-{r:03d}"))
        return latencies
    finally:
        await fan.close()


# -- run ----------------------------------------------------------------------------------------


async def measure(config: Config, workdir: Path, store: str | None = None) -> Results:
    """Start the servers, run every phase, stop everything (``store``: a store URL instead of
    ``config.store``)."""
    deadline = Deadline(config.max_seconds)
    rng = random.Random(config.seed)
    results = Results()
    registry = await start_registry(workdir, store or config.store)
    echo_server, echo_target = await start_echo(workdir)
    try:
        target = f"unix://{workdir / 'registry.sock'}"
        async with (
            grpc.aio.insecure_channel(target) as ch,
            grpc.aio.insecure_channel(target) as watch_ch,
            grpc.aio.insecure_channel(echo_target) as echo_ch,
        ):
            stub = registry_pb2_grpc.NetworkServiceEndpointRegistryStub(ch)
            kind = (store or config.store).split(":", 1)[0]
            progress(NAME, f"registering up to {config.endpoints} endpoints ({kind})")
            results.registered, results.register_seconds = await register_all(
                stub, config, deadline
            )
            sample = endpoint(0, config.services).SerializeToString()
            progress(NAME, "the peer: echo throughput")
            results.echo_calls, results.echo_seconds = await echo_throughput(
                echo_ch, sample, config, deadline
            )
            n = max(1, results.registered)
            by_name = [
                NetworkServiceEndpoint(name=f"nse-{rng.randrange(n):06d}")
                for _ in range(config.finds)
            ]
            by_service = [
                NetworkServiceEndpoint(
                    network_service_names=[f"svc-{rng.randrange(min(n, config.services))}"]
                )
                for _ in range(config.finds)
            ]
            # Warm up both paths (connection setup, first-call costs) before timing.
            await find_latencies(stub, by_name[:20], deadline)
            await echo_latencies(echo_ch, query(by_name[0]).SerializeToString(), 20, deadline)

            progress(NAME, f"{config.finds} finds by name, then by service")
            results.find_by_name, _ = await find_latencies(stub, by_name, deadline)
            results.find_by_service, results.records_per_service_find = await find_latencies(
                stub, by_service, deadline
            )
            reply = NetworkServiceEndpointResponse(
                network_service_endpoint=endpoint(0, config.services)
            )
            # The peer's request is a real query; its reply is as big as a real Find reply.
            payload = query(by_name[0]).SerializeToString() + reply.SerializeToString()
            progress(NAME, "the peer: echo latencies")
            results.echo = await echo_latencies(echo_ch, payload, config.finds, deadline)
            progress(NAME, "watch fan-out")

            watch_stub = registry_pb2_grpc.NetworkServiceEndpointRegistryStub(watch_ch)
            results.fanout = await fanout_latencies(stub, watch_stub, config, deadline)
    finally:
        # A grace period lets closing channels finish their goodbye instead of being cut off.
        await echo_server.stop(1.0)
        await registry.stop(grace=1.0)
    return results


def _summary(samples: Sequence[float], pct: float) -> float:
    return ms(percentile(samples, pct)) if samples else float("nan")


def metrics_of(results: Results) -> list[Metric]:
    """The figures the benchmark reports, with their goals."""
    throughput = results.registered / results.register_seconds if results.register_seconds else 0
    echo_rate = results.echo_calls / results.echo_seconds if results.echo_seconds else 0
    find_p50 = _summary(results.find_by_name, 50)
    echo_p50 = _summary(results.echo, 50)
    per_service = results.records_per_service_find
    out = [
        Metric("register_throughput", round(throughput, 1), "records/s"),
        Metric("grpc_unary_throughput", round(echo_rate, 1), "calls/s"),
        Metric("register_vs_grpc_unary_throughput",
               round(throughput / echo_rate, 2) if echo_rate else 0.0, "x"),
        Metric("find_by_name_p50", find_p50, "ms"),
        Metric("find_by_name_p99", _summary(results.find_by_name, 99), "ms", FIND_P99_GOAL_MS),
        Metric("find_by_service_p50", _summary(results.find_by_service, 50), "ms"),
        Metric("find_by_service_p99", _summary(results.find_by_service, 99), "ms",
               FIND_P99_GOAL_MS),
        Metric("find_by_service_records_avg",
               round(sum(per_service) / len(per_service), 1) if per_service else 0.0, "records"),
        Metric("grpc_roundtrip_p50", echo_p50, "ms"),
        Metric("grpc_roundtrip_p99", _summary(results.echo, 99), "ms"),
        Metric("find_p50_vs_grpc_roundtrip", round(find_p50 / echo_p50, 2), "x"),
        Metric("fanout_p50", _summary(results.fanout, 50), "ms"),
        Metric("fanout_p99", _summary(results.fanout, 99), "ms", FANOUT_GOAL_MS),
        Metric("fanout_max", ms(max(results.fanout)) if results.fanout else float("nan"), "ms",
               FANOUT_GOAL_MS),
    ]
    return out


# -- etcd ---------------------------------------------------------------------------------------


async def start_replicas(workdir: Path, url: str, count: int) -> list[Process]:
    """``count`` registry processes over the store ``url``, each on ``workdir/rN.sock``."""
    replicas = []
    for i in range(count):
        replicas.append(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "registry", "--listen", f"unix://{workdir / f'r{i}.sock'}",
            "--store", url, "--default-ttl", "3600", "--log-level", "warning",
            "--max-records-per-identity", str(QUOTA), "--max-bytes-per-identity", str(QUOTA_BYTES),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        ))
    deadline = time.monotonic() + WAIT
    for i, replica in enumerate(replicas):
        while not unix_socket_accepts(workdir / f"r{i}.sock"):
            if replica.returncode is not None or time.monotonic() > deadline:
                await stop_replicas(replicas)
                raise RuntimeError(f"registry replica {i} did not start ({replica.returncode})")
            await asyncio.sleep(0.02)  # polling a process's socket, bounded by the deadline
    return replicas


async def stop_replicas(replicas: Sequence[Process]) -> None:
    for replica in replicas:
        if replica.returncode is None:
            replica.terminate()
    for replica in replicas:
        try:
            async with asyncio.timeout(5):
                await replica.wait()
        except TimeoutError:
            replica.kill()
            await replica.wait()


async def replicas_throughput(workdir: Path, url: str, count: int, config: Config) -> float:
    """Registrations per second of the whole population spread over ``count`` replica
    processes (each its own channel and ``config.concurrency`` calls in flight)."""
    replicas = await start_replicas(workdir, url, count)
    deadline = Deadline(config.max_seconds)
    try:
        channels = [grpc.aio.insecure_channel(f"unix://{workdir / f'r{i}.sock'}")
                    for i in range(count)]
        stubs = [registry_pb2_grpc.NetworkServiceEndpointRegistryStub(ch) for ch in channels]
        indexes = iter(range(config.endpoints))
        done = 0

        async def worker(stub: Any) -> None:
            nonlocal done
            for i in indexes:
                if deadline.expired():
                    return
                await stub.Register(endpoint(i, config.services), timeout=WAIT)
                done += 1

        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for stub in stubs:
                for _ in range(min(config.concurrency, MAX_IN_FLIGHT)):
                    group.create_task(worker(stub))
        seconds = time.perf_counter() - start
        for ch in channels:
            await ch.close()
        return done / seconds if seconds else 0.0
    finally:
        await stop_replicas(replicas)


async def measure_etcd(config: Config, workdir: Path, peer: Results) -> list[Metric]:
    """The same phases on the etcd store, then three replicas against one (see the module
    docstring); figures and ratios against ``peer`` (the ``--store`` run)."""
    async with EtcdCluster(workdir / "etcd", members=1) as cluster:
        progress(NAME, "etcd: the same phases on the etcd store")
        results = await measure(config, workdir, f"{cluster.url}/bench-one")
        progress(NAME, "etcd: register throughput of one registry process, then three")
        one = await replicas_throughput(workdir, f"{cluster.url}/bench-r1", 1, config)
        three = await replicas_throughput(workdir, f"{cluster.url}/bench-r3", 3, config)
    mine = {m.name: m for m in metrics_of(results)}
    theirs = {m.name: m for m in metrics_of(peer)}

    def ratio(name: str) -> float:
        base = theirs[name].value
        return round(mine[name].value / base, 2) if base else float("nan")

    return [
        *(Metric(f"etcd_{name}", mine[name].value, mine[name].unit, mine[name].goal)
          for name in ("register_throughput", "find_by_name_p99", "find_by_service_p99",
                       "fanout_p99")),
        Metric("etcd_vs_store_register_throughput", ratio("register_throughput"), "x"),
        Metric("etcd_vs_store_find_by_name_p99", ratio("find_by_name_p99"), "x"),
        Metric("etcd_vs_store_fanout_p99", ratio("fanout_p99"), "x"),
        Metric("etcd_one_replica_register_throughput", round(one, 1), "records/s"),
        Metric("etcd_three_replicas_register_throughput", round(three, 1), "records/s"),
        Metric("etcd_three_vs_one_replica_register_throughput",
               round(three / one, 2) if one else float("nan"), "x"),
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.registry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Config()
    parser.add_argument("--endpoints", type=int, default=defaults.endpoints)
    parser.add_argument("--watchers", type=int, default=defaults.watchers)
    parser.add_argument("--finds", type=int, default=defaults.finds,
                        help="finds per kind (by name, by service) and peer round trips")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="fan-out rounds")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency,
                        help=f"register calls in flight (at most {MAX_IN_FLIGHT})")
    parser.add_argument("--store", choices=("sqlite", "memory"), default=defaults.store)
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds,
                        help="wall-clock budget; phases stop early when it runs out")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--etcd", action="store_true",
                        help="measure the etcd store too, and three replicas against one")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _check(config: Config, fail: Callable[[str], Any]) -> None:
    if config.endpoints < 1 or config.watchers < 1 or config.finds < 1 or config.rounds < 1:
        fail("--endpoints, --watchers, --finds and --rounds must be at least 1")
    if not 1 <= config.concurrency <= MAX_IN_FLIGHT:
        fail(f"--concurrency must be in 1..{MAX_IN_FLIGHT}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = vars(parser.parse_args(argv))
    json_output = args.pop("json")
    with_etcd = args.pop("etcd")
    config = Config(**args)
    _check(config, parser.error)
    log.configure("warning", json=True)  # keep the registry's info lines out of the output
    workdir = Path(tempfile.mkdtemp(prefix="vwb-", dir="/tmp"))  # short: Unix socket paths
    try:
        results = asyncio.run(measure(config, workdir))
        metrics = metrics_of(results)
        if with_etcd:
            metrics += asyncio.run(measure_etcd(config, workdir, results))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    info = {**asdict(config), "services": config.services, "registered": results.registered,
            "find_samples": len(results.find_by_name), "fanout_rounds": len(results.fanout),
            "etcd": with_etcd}
    print(report(metrics, info, json_output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
