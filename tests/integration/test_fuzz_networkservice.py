"""Property-based hostile input for the NetworkService servers of a running fabric.

A two-node in-process fabric (:mod:`tests.integration.fabric`: real nsmgrs, forwarders with
:class:`FakeKernel`/:class:`FakeWireGuard`, real endpoints, a real registry) runs on its own event
loop in a background thread for the whole module; hypothesis drives plain synchronous gRPC calls
at three servers:

* ``nsmgr`` — node n1's nsmgr on its unix socket, as a client calls it (endpoints: ``nse-local``
  on n1 for ``local-db``, ``nse-remote`` on n2 for ``db``);
* ``forwarder`` — n1's forwarder directly, as its nsmgr calls it (client side: KERNEL into the
  client's namespace, endpoint chosen; endpoint side: a WIREGUARD offer from another node). The
  harness plays the nsmgr's part: each call carries the route n1's nsmgr would hand on for the
  request's endpoint (:mod:`sdk.networkservice.route`; none for an endpoint it does not know);
* ``nse`` — the reference endpoint ``nse-local`` directly.

Requests start from a valid one and get hostile changes: huge strings and maps, odd CIDRs and IPs
everywhere in the IP context, invalid interface names, wrong namespace URLs, unknown mechanism
types and classes, odd paths (index out of range, empty, many or repeated segments, spoofed hop
names, strange expiries), odd states and MTUs. Further properties: Close of unknown or garbled
connections, a live connection coming back changed (refresh or close), two requests with the same
connection id (at once and in turn), and bytes that may not even be a message.

Properties: every call ends within its deadline; the status is never INTERNAL, UNKNOWN (except
for undecodable bodies) or DEADLINE_EXCEEDED, and an error's message is non-empty, short and, for
INVALID_ARGUMENT, names the field; what was accepted closes cleanly, and then nothing is left:
the fake kernels (links, addresses, routes, rules, neighbours) and fake WireGuard, the nsmgrs',
forwarders' and endpoints' per-connection state (monitors, metadata, timers, serial locks, tunnel
ports, load counts), the nsmgrs' circuit breakers, the endpoints' IPAM and the registry are as
before the example; and valid requests still succeed everywhere at the end.

Example counts are :data:`EXAMPLES` (the whole module takes ~20 s on two cores); how many test
bodies ran is printed when the module ends (``pytest -s``); ``VWIRE_FUZZ_SCALE=10`` runs ten times
as many with a random seed (bug hunting). The regressions at the end are what these properties
found, as plain tests.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from ipaddress import ip_network
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from api.proto import networkservice_pb2_grpc
from api.proto.connection_pb2 import (
    DOWN,
    REFRESH_REQUESTED,
    RESELECT_REQUESTED,
    UP,
    Connection,
    Mechanism,
    PathSegment,
)
from api.proto.connection_pb2 import Path as ConnPath
from api.proto.connectioncontext_pb2 import IpNeighbor, Route
from api.proto.networkservice_pb2 import NetworkServiceRequest
from forwarder.wireguard import generate_keypair
from forwarder.xconnect import Xconnect
from sdk.networkservice.begin import Begin
from sdk.networkservice.metadata import Metadata
from sdk.networkservice.route import Route as NextHop
from sdk.networkservice.timeout import Timeout
from tests.integration.background import BackgroundLoop
from tests.integration.fabric import Fabric

T = TypeVar("T")

WAIT = 10.0  # deadline of every call
TARGETS = ("nsmgr", "forwarder", "nse")
SCALE = float(os.environ.get("VWIRE_FUZZ_SCALE", "1"))
EXAMPLES = {
    name: max(1, round(count * SCALE))
    for name, count in {
        "request:nsmgr": 300,
        "request:forwarder": 300,
        "request:nse": 300,
        "wireguard_offer:forwarder": 150,
        "close:any": 200,
        "refresh:any": 250,
        "same_id:any": 120,
        "raw_bytes:any": 200,
    }.items()
}
#: Test bodies run per property (hypothesis also runs some it then discards as invalid).
RAN: Counter[str] = Counter()
FUZZ = settings(
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # no slow "explain"
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
    derandomize=SCALE == 1,
)

ALLOWED_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
}
MAX_DETAILS = 2048  # a message names the problem; it does not echo kilobytes of input

SERVICES = {"nse-local": "local-db", "nse-remote": "db"}  # endpoint → the service it provides
CLIENT_NETNS = "/var/run/netns/n1-fuzz-client"
#: (server, endpoint) of valid requests: the endpoint server is nse-local, which serves only its own
PAIRS = [(t, e) for t in TARGETS for e in sorted(SERVICES) if t != "nse" or e == "nse-local"]
HOP_NAMES = ["nsmgr-n1", "nsmgr-n2", "forwarder-n1", "forwarder-n2", "nse-local", "nse-remote",
             "fuzz-client"]


# --- the fabric on a background loop -----------------------------------------------------------

@dataclass
class Outcome:
    """How one call ended."""

    code: grpc.StatusCode
    details: str
    reply: Any
    seconds: float


class ServedFabric:
    """Two fake nodes, two endpoints and synchronous stubs to the three servers under test."""

    def __init__(self) -> None:
        self.background = BackgroundLoop("fuzz-fabric")
        self.root = Path(tempfile.mkdtemp(dir="/tmp", prefix="vwf-"))
        self.fabric = Fabric(self.root)
        self.run(self._start())
        n1 = self.fabric.nodes[0].dir
        self.channels = {
            "nsmgr": grpc.insecure_channel(f"unix://{n1}/nsmgr.sock"),
            "forwarder": grpc.insecure_channel(f"unix://{n1}/forwarder.sock"),
            "nse": grpc.insecure_channel(f"unix://{n1}/nse-local.sock"),
        }
        self.stubs: dict[str, Any] = {
            target: networkservice_pb2_grpc.NetworkServiceStub(channel)
            for target, channel in self.channels.items()
        }
        self.baseline: dict[str, object] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.background.run(coro)

    async def _start(self) -> None:
        await self.fabric.start(2)
        n1, n2 = self.fabric.nodes
        await self.fabric.endpoint(n1, "nse-local", service="local-db")
        await self.fabric.endpoint(n2, "nse-remote", service="db")
        assert n1.workload("fuzz-client") == CLIENT_NETNS

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        self.run(self.fabric.stop())
        self.background.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- what must be left as it was ---------------------------------------------------------

    async def _state(self) -> dict[str, object]:
        chains = [e.chain.elements for e in self.fabric.endpoints]
        for node in self.fabric.nodes:
            assert node.nsmgr is not None and node.forwarder and node.forwarder.chain is not None
            chains += [node.nsmgr.chain.elements, node.forwarder.chain.elements]
        for timeout in (e for chain in chains for e in chain if isinstance(e, Timeout)):
            await timeout.settle()  # closes of connections that expired at once finish first
        state: dict[str, object] = {}
        for node in self.fabric.nodes:
            assert node.nsmgr is not None and node.forwarder and node.forwarder.chain is not None
            wireguard: Any = node.forwarder.backend
            state[f"{node.name} kernel"] = node.kernel.snapshot()
            state[f"{node.name} wireguard"] = (sorted(wireguard.where), sorted(wireguard.peers))
            state[f"{node.name} nsmgr"] = chain_state(
                node.nsmgr.chain.elements, sorted(node.nsmgr.monitor.connections),
                dict(node.nsmgr.node_manager.load.counts),
                # a hostile request is the caller's fault: it must not get an endpoint ejected
                {name: node.nsmgr.breaker.state(name).value for name in SERVICES},
            )
            xconnect = next(e for e in node.forwarder.chain.elements if isinstance(e, Xconnect))
            state[f"{node.name} forwarder"] = chain_state(
                node.forwarder.chain.elements,
                sorted(xconnect.ports._by_owner),  # the tunnel ports held (no public view)
            )
        for endpoint in self.fabric.endpoints:
            state[endpoint.name] = chain_state(
                endpoint.chain.elements, sorted(endpoint.monitor.connections),
                {prefix: endpoint.ipam.free_addresses(prefix) for prefix in endpoint.ipam.prefixes},
            )
        registry = self.fabric.registry
        state["registry"] = (
            len(registry.service_records), len(registry.endpoint_records),
            [registry.service_records.get(s) is not None for s in SERVICES.values()],
            [registry.endpoint_records.get(e) is not None for e in SERVICES],
        )
        return state

    def state(self) -> dict[str, object]:
        return self.run(self._state())

    # -- calls ---------------------------------------------------------------------------------

    def call(self, target: str, method: str, message: Any) -> Outcome:
        """One call; see :meth:`finish_call`."""
        started = time.monotonic()
        return self.finish_call(self.start_call(target, method, message), started)

    def route(self, message: Any) -> list[tuple[str, str]]:
        """The route headers n1's nsmgr would send its forwarder with ``message`` (none for an
        endpoint it does not know)."""
        conn = message.connection if isinstance(message, NetworkServiceRequest) else message
        if not isinstance(conn, Connection):
            return []
        n1, n2 = self.fabric.nodes
        assert n1.nsmgr is not None and n2.nsmgr is not None
        name = conn.network_service_endpoint_name
        local = n1.nsmgr.local_endpoints.url(name)
        if local:
            return list(NextHop(local, "", "LOCAL").headers().items())
        if name == "nse-remote":
            return list(NextHop(str(n2.nsmgr.advertise), "", "REMOTE").headers().items())
        return []

    def start_call(self, target: str, method: str, message: Any) -> Any:
        metadata = self.route(message) if target == "forwarder" else []
        return getattr(self.stubs[target], method).future(
            message, timeout=WAIT, metadata=metadata)

    def finish_call(self, future: Any, started: float) -> Outcome:
        """How a call ended (not checked yet: the caller cleans up first, then checks)."""
        try:
            reply = future.result()
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
            details: str = exc.details() or ""  # type: ignore[attr-defined]
            return Outcome(code, details, None, time.monotonic() - started)
        return Outcome(grpc.StatusCode.OK, "", reply, time.monotonic() - started)

    def close_accepted(self, target: str, outcomes: list[Outcome]) -> list[Outcome]:
        """Close what a server accepted (in order); returns the closes' outcomes."""
        return [self.call(target, "Close", o.reply) for o in outcomes
                if o.code == grpc.StatusCode.OK]


def chain_state(elements: Any, *extra: object) -> tuple[object, ...]:
    """Per-connection state of a chain (ids held by Begin, metadata entries, armed timers) and
    ``extra``."""
    return (
        sum(e.active for e in elements if isinstance(e, Begin)),
        sum(len(e) for e in elements if isinstance(e, Metadata)),
        sum(e.armed for e in elements if isinstance(e, Timeout)),
        *extra,
    )


def check(outcome: Outcome, what: str = "request") -> None:
    """Within the deadline; OK, or an allowed status with a clear message."""
    assert outcome.seconds < WAIT, f"{what} took {outcome.seconds:.1f}s: {outcome}"
    if outcome.code == grpc.StatusCode.OK:
        return
    code, details = outcome.code, outcome.details
    assert code in ALLOWED_CODES, f"{what}: {code.name}: {details[:500]}"
    assert details.strip(), f"{what}: {code.name} without a message"
    assert len(details) <= MAX_DETAILS, f"{what}: {code.name}: a {len(details)}-character message"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, sep, problem = details.partition(": ")
        assert sep and field.strip() and problem.strip(), f"{what}: no field: {details[:300]}"


def check_closed(closes: list[Outcome]) -> None:
    """Closing what a server accepted succeeds."""
    for close in closes:
        assert close.code == grpc.StatusCode.OK, f"closing an accepted connection: {close}"


def assert_clean(served: ServedFabric, before: dict[str, object]) -> None:
    """Nothing half-applied or left behind anywhere since ``before`` (module docstring). Each
    example compares with its own start, so one failure does not fail every later example."""
    now = served.state()
    changed = {key: (before[key], now[key]) for key in before if before[key] != now[key]}
    assert not changed, f"left behind: {changed}"


def check_valid_requests(served: ServedFabric) -> None:
    """A valid request for each endpoint succeeds on every server and closes cleanly."""
    for target, endpoint in PAIRS:
        accepted = served.call(target, "Request",
                               valid_request(target, str(uuid.uuid4()), endpoint))
        assert accepted.code == grpc.StatusCode.OK, (target, endpoint, accepted)
        check_closed(served.close_accepted(target, [accepted]))


@pytest.fixture(scope="module")
def served() -> Iterator[ServedFabric]:
    server = ServedFabric()
    try:
        check_valid_requests(server)  # the setup is right
        server.baseline = server.state()
        yield server
        check_valid_requests(server)  # the servers survived everything
        assert server.state() == server.baseline
    finally:
        server.close()
        print("\nNetworkService fuzz: test bodies run", dict(sorted(RAN.items())),
              "examples planned", EXAMPLES)


# --- strategies --------------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
_HUGE = st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(257, 100_000))
#: Short, longer, over the 256-character name limit, and up to 100 KB.
STRINGS = st.one_of(TEXT, st.text(st.characters(codec="utf-8"), min_size=41, max_size=250),
                    st.text(st.characters(codec="utf-8"), min_size=251, max_size=4200), _HUGE)
IDS = st.one_of(st.uuids().map(str), STRINGS, st.sampled_from(["", " ", "a b", "x" * 200]))
LABELS = st.one_of(
    st.dictionaries(STRINGS, STRINGS, max_size=20),
    st.integers(0, 3000).map(lambda n: {f"k{i}": "v" for i in range(n)}),
)

_ADDRESS = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6),
                     st.ip_addresses(network="10.60.0.0/29"),  # the endpoints' own prefixes
                     st.ip_addresses(network="fd00:60::/125"))
#: Well-formed: prefixes without host bits, addresses with a prefix length, bare addresses.
PREFIXES = st.builds(lambda a, n: str(ip_network(f"{a}/{n % (a.max_prefixlen + 1)}",
                                                 strict=False)), _ADDRESS, st.integers(0, 128))
CIDRS = st.builds(lambda a, n: f"{a}/{n % (a.max_prefixlen + 1)}", _ADDRESS, st.integers(0, 128))
IPS = _ADDRESS.map(str)
ODD_ADDRESSES = [
    "", "10.0.0.1", "10.0.0.1/32", "10.0.0.1/33", "10.0.0.1/8", "10.0.0.0/8", "0.0.0.0/0",
    "::/0", "0.0.0.0/32", "fe80::1%eth0/64", "fe80::1%nsm0", "::ffff:10.0.0.1/128", "1.2.3",
    "1.2.3.4/", "/32", "10.60.0.1/32", "10.60.0.2/32", "fd00:60::1/128", "fd00:60::2/128",
    "10.60.0.0/16", "10.60.0.0/31", "fd00:60::/64", "127.0.0.1/8", "224.0.0.1/32",
    "255.255.255.255/32", "10.250.0.1/24", "[::1]/128", "1.2.3.4/32/32", "01.02.03.04/32",
    "10.0.0.1 /32", "10.0.0.1/-1", "10.0.0.1/0x20", "::1/128", "fe80::/10", "2001:db8::/129",
    "10.0.0.1/255.255.255.0", "10.0.0.1/0.0.0.255",
    "10.0.0.1/\u0663\u0662", "\u0661\u0660.0.0.1/32",  # Arabic-Indic digits
]
ADDRESSISH = st.one_of(
    st.sampled_from(ODD_ADDRESSES),
    PREFIXES, CIDRS, IPS,
    st.builds("{}/{}".format, IPS, st.integers(-1, 130)),
    st.text(alphabet="0123456789abcdefABCDEF.:/%-x [] ", max_size=45),
    STRINGS,
)
MACS = st.one_of(st.sampled_from(["02:00:00:00:00:01", "", "zz:zz:zz:zz:zz:zz", "02-00-00-00-00-01",
                                  "ff:ff:ff:ff:ff:ff", "2:0:0:0:0:1", "02:00:00:00:00:01\n"]),
                 STRINGS)
IFNAMES = st.one_of(
    st.sampled_from(["", "nsm0", "x" * 15, "x" * 16, "a/b", "a b", "eth0:1", ".", "..", "lo",
                     "ul0", "nsm\x00", "\n", "é" * 8, "é" * 15, "名前", "vw0123456789a", "-",
                     "nsm0 ", "\u00a0nsm", "a\u2028b"]),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    STRINGS,
)
NETNS_URLS = st.one_of(
    st.sampled_from([
        "", CLIENT_NETNS, f"file://{CLIENT_NETNS}", "/var/run/netns/n2-fuzz-client",
        "/var/run/netns/n1-nse-local", "/var/run/netns/../netns/n1-fuzz-client",
        f"{CLIENT_NETNS}/", f"file:{CLIENT_NETNS}", f"/{CLIENT_NETNS}", "file://host/x",
        "file://[x", "inode://1/2", "inode://a/b", "inode://²/1", "inode:///", "inode://1/2/3",
        "/proc/1/ns/net", "relative/path", "http://x/y", "/var/run/netns/\x00", "file:///%00",
        "file:///%2e%2e/x", "unix:///x", " ",
    ]),
    STRINGS,
)
TYPES = st.one_of(st.sampled_from(["KERNEL", "WIREGUARD", "kernel", "VXLAN", "MEMIF", "", " "]),
                  STRINGS)
CLASSES = st.one_of(st.sampled_from(["LOCAL", "REMOTE", "", "local", "GLOBAL"]), STRINGS)
_KEY = generate_keypair()[1]
KEYS = st.one_of(st.just(_KEY), st.sampled_from(["", "=", "A" * 44, _KEY[:-2], _KEY + "AA",
                                                 "not base64!", _KEY.replace("=", "")]),
                 STRINGS)
PORTS = st.one_of(st.integers(-5, 70_000).map(str),
                  st.sampled_from(["", "0", "51820", "²", "٣", "1e3", " 1", "0x10", "+1"]),
                  STRINGS)
PARAM_KEYS = ["inodeURL", "name", "src_ip", "src_port", "src_public_key", "dst_ip", "dst_port",
              "dst_public_key", "MTU"]
#: Timestamps: anything, or valid ones close to now (a caller's expiry in the past makes the
#: server close the connection right after accepting it).
STAMPS = st.one_of(
    st.tuples(st.integers(-2**63, 2**63 - 1), st.integers(-2**31, 2**31 - 1)),
    st.tuples(st.integers(-30, 30).map(lambda s: int(time.time()) + s),
              st.integers(0, 10**9 - 1)),
)
ENUMS = st.one_of(st.sampled_from([UP, DOWN, REFRESH_REQUESTED, RESELECT_REQUESTED]),
                  st.integers(-2**31, 2**31 - 1))


def kernel_mechanism(netns: str, name: str) -> Mechanism:
    return Mechanism(cls="LOCAL", type="KERNEL", parameters={"inodeURL": netns, "name": name})


def valid_request(target: str, conn_id: str, endpoint: str = "nse-local") -> NetworkServiceRequest:
    """A request ``target`` accepts as it stands."""
    request = NetworkServiceRequest()
    request.connection.id = conn_id
    request.connection.network_service = SERVICES[endpoint]
    if target == "forwarder":  # as n1's nsmgr sends it: the endpoint is chosen
        request.connection.network_service_endpoint_name = endpoint
        request.connection.path.path_segments.extend([  # the forwarder's segment keeps the id
            PathSegment(name="nsmgr-n1", id=f"h-{conn_id}"),
            PathSegment(name="forwarder-n1", id=conn_id),
        ])
    # An interface name of its own: what one example leaves behind never blocks the next one.
    name = "c" + hashlib.sha256(conn_id.encode()).hexdigest()[:8]
    request.mechanism_preferences.append(kernel_mechanism(CLIENT_NETNS, name))
    return request


def mechanism(draw: st.DrawFn) -> Mechanism:
    """A mechanism of any type and class with odd parameters."""
    params: dict[str, str] = {}
    for key in draw(st.lists(st.sampled_from(PARAM_KEYS), max_size=6, unique=True)):
        params[key] = draw({"inodeURL": NETNS_URLS, "name": IFNAMES, "src_port": PORTS,
                            "dst_port": PORTS, "MTU": PORTS, "src_public_key": KEYS,
                            "dst_public_key": KEYS}.get(key, ADDRESSISH))
    params.update(draw(st.dictionaries(STRINGS, STRINGS, max_size=3)))
    if draw(st.integers(0, 9)) == 0:  # a big map
        params.update({f"p{i}": "v" for i in range(draw(st.integers(60, 2000)))})
    return Mechanism(cls=draw(CLASSES), type=draw(TYPES), parameters=params)


@st.composite
def paths(draw: st.DrawFn) -> ConnPath:
    """Paths with odd indexes, names, ids and expiries."""
    path = ConnPath()
    count = draw(st.one_of(st.integers(0, 4), st.integers(5, 40)))
    ids = st.one_of(st.uuids().map(str), st.sampled_from(["", "same", "same"]), STRINGS)
    for _ in range(count):
        segment = PathSegment(name=draw(st.one_of(st.sampled_from(HOP_NAMES), STRINGS)),
                              id=draw(ids), token=draw(st.sampled_from(["", "x.y.z"])))
        if draw(st.booleans()):
            segment.expires.seconds, segment.expires.nanos = draw(STAMPS)
        if draw(st.booleans()):
            segment.metrics.update(draw(st.dictionaries(TEXT, TEXT, max_size=3)))
        path.path_segments.append(segment)
    path.index = draw(st.one_of(st.integers(0, max(count, 1)), st.integers(0, 2**32 - 1)))
    return path


Mutation = Callable[[st.DrawFn, NetworkServiceRequest], None]


def _ip_context(draw: st.DrawFn, request: NetworkServiceRequest) -> None:
    ip = request.connection.context.ip_context
    # Mostly well-formed values (they get past parsing, into IPAM and the data plane), some
    # garbage; now and then long lists.
    addresses = st.one_of(CIDRS, CIDRS, ADDRESSISH)
    prefixes = st.one_of(PREFIXES, PREFIXES, ADDRESSISH)
    hops = st.one_of(st.just(""), IPS, ADDRESSISH)
    size = draw(st.sampled_from([2, 2, 2, 40]))
    ip.src_ip_addrs.extend(draw(st.lists(addresses, max_size=size)))
    ip.dst_ip_addrs.extend(draw(st.lists(addresses, max_size=size)))
    ip.excluded_prefixes.extend(draw(st.lists(prefixes, max_size=size)))
    routes = st.lists(st.builds(Route, prefix=prefixes, nextHop=hops), max_size=3)
    ip.src_routes.extend(draw(routes))
    ip.dst_routes.extend(draw(routes))
    ip.ip_neighbors.extend(draw(st.lists(st.builds(IpNeighbor, ip=st.one_of(IPS, ADDRESSISH),
                                                   hardware_address=MACS), max_size=2)))
    ip.extra_prefixes.extend(draw(st.lists(prefixes, max_size=2)))


def _parameter(key: str, values: st.SearchStrategy[str]) -> Mutation:
    def change(draw: st.DrawFn, request: NetworkServiceRequest) -> None:
        for mech in request.mechanism_preferences:
            mech.parameters[key] = draw(values)
    return change


def _mechanisms(draw: st.DrawFn, request: NetworkServiceRequest) -> None:
    odd = [mechanism(draw) for _ in range(draw(st.integers(0, 4)))]
    if draw(st.booleans()):
        del request.mechanism_preferences[:]
    request.mechanism_preferences.extend(odd)
    if draw(st.integers(0, 9)) == 0:  # many preferences
        request.mechanism_preferences.extend([odd[0] if odd else Mechanism()] * 40)


def _context_extra(draw: st.DrawFn, request: NetworkServiceRequest) -> None:
    context = request.connection.context
    context.extra_context.update(draw(st.dictionaries(STRINGS, STRINGS, max_size=5)))
    dns = context.dns_context.configs.add()
    dns.dns_server_ips.extend(draw(st.lists(ADDRESSISH, max_size=3)))
    dns.search_domains.extend(draw(st.lists(STRINGS, max_size=3)))


def _set(field: str, values: st.SearchStrategy[Any], on_context: bool = False) -> Mutation:
    def change(draw: st.DrawFn, request: NetworkServiceRequest) -> None:
        conn = request.connection
        setattr(conn.context if on_context else conn, field, draw(values))
    return change


#: One hostile change of each kind to a request (for any target).
MUTATIONS: dict[str, Mutation] = {
    "id": _set("id", IDS),
    "service": _set("network_service", st.one_of(
        st.sampled_from(["db", "local-db", "forwarder", ""]), STRINGS)),
    "endpoint_name": _set("network_service_endpoint_name",
                          st.one_of(st.sampled_from(HOP_NAMES), STRINGS)),
    "payload": _set("payload", st.one_of(st.sampled_from(["IP", "ETHERNET"]), STRINGS)),
    "labels": lambda draw, request: request.connection.labels.update(draw(LABELS)),
    "ip_context": _ip_context,
    "interface": _parameter("name", IFNAMES),
    "netns": _parameter("inodeURL", NETNS_URLS),
    "mechanisms": _mechanisms,
    "path": lambda draw, request: request.connection.path.CopyFrom(draw(paths())),
    "state": _set("state", ENUMS),
    "mtu": _set("MTU", st.one_of(st.sampled_from([0, 1, 67, 68, 1279, 1280, 65535, 65536]),
                                 st.integers(0, 2**32 - 1)), on_context=True),
    "context_extra": _context_extra,
}
HOSTILE = list(MUTATIONS)


def mutate(draw: st.DrawFn, request: NetworkServiceRequest, kind: str, target: str) -> None:
    """Apply one hostile change of ``kind`` (one of :data:`HOSTILE`) to a request for
    ``target``."""
    MUTATIONS[kind](draw, request)


def overlay(kind: str, changed: NetworkServiceRequest, target: NetworkServiceRequest) -> None:
    """Carry the hostile change of ``kind`` that :func:`mutate` made to ``changed`` over to
    ``target`` (a live connection coming back)."""
    src, dst = changed.connection, target.connection
    fields = {"id": "id", "service": "network_service", "endpoint_name":
              "network_service_endpoint_name", "payload": "payload", "state": "state"}
    if kind in fields:
        setattr(dst, fields[kind], getattr(src, fields[kind]))
    elif kind == "labels":
        dst.labels.update(src.labels)
    elif kind in ("ip_context", "context_extra"):
        dst.context.MergeFrom(src.context)  # the odd values on top of the assigned ones
    elif kind == "mtu":
        dst.context.MTU = src.context.MTU
    elif kind == "path":
        dst.path.CopyFrom(src.path)
    elif kind in ("interface", "netns", "mechanisms"):
        del target.mechanism_preferences[:]
        target.mechanism_preferences.extend(changed.mechanism_preferences)
    else:  # pragma: no cover - a kind missing here
        raise AssertionError(kind)


@st.composite
def requests(draw: st.DrawFn, target: str) -> NetworkServiceRequest:
    """A valid request for ``target`` with none, one or two hostile changes."""
    endpoint = draw(st.sampled_from(sorted(SERVICES)))
    request = valid_request(target, str(draw(st.uuids())), endpoint)
    kinds = draw(st.lists(st.sampled_from(HOSTILE), max_size=2, unique=True))
    for kind in kinds:
        mutate(draw, request, kind, target)
    event("valid" if not kinds else "hostile: " + ", ".join(sorted(kinds)))
    return request


@st.composite
def wireguard_offers(draw: st.DrawFn) -> NetworkServiceRequest:
    """What another node's forwarder sends: a WIREGUARD offer, here with odd parameters."""
    request = NetworkServiceRequest()
    request.connection.id = str(draw(st.uuids()))
    request.connection.network_service = "local-db"
    request.connection.network_service_endpoint_name = draw(
        st.sampled_from(["nse-local", "nse-local", "nse-remote"]))
    params = {
        "src_ip": draw(st.one_of(st.just("10.250.0.2"), ADDRESSISH)),
        "src_port": draw(st.one_of(st.just("51820"), PORTS)),
        "src_public_key": draw(KEYS),
    }
    for key in draw(st.lists(st.sampled_from(PARAM_KEYS), max_size=3, unique=True)):
        params[key] = draw(st.one_of(ADDRESSISH, PORTS, KEYS))
    request.mechanism_preferences.append(Mechanism(cls=draw(CLASSES), type="WIREGUARD",
                                                   parameters=params))
    for kind in draw(st.lists(st.sampled_from(["ip_context", "mtu", "path", "labels"]),
                              max_size=2, unique=True)):
        mutate(draw, request, kind, "forwarder")
    return request


@st.composite
def garbled_connections(draw: st.DrawFn) -> Connection:
    """Connections nobody asked for: unknown ids, odd paths, any content."""
    request = valid_request("forwarder", str(draw(st.uuids())))
    for kind in draw(st.lists(st.sampled_from(HOSTILE), max_size=4, unique=True)):
        mutate(draw, request, kind, "close")
    return request.connection


# --- properties --------------------------------------------------------------------------------

def request_and_clean_up(served: ServedFabric, target: str, request: NetworkServiceRequest) -> None:
    before = served.state()
    outcome = served.call(target, "Request", request)
    event(f"{target}: {outcome.code.name}")
    closes = served.close_accepted(target, [outcome])
    check(outcome)
    check_closed(closes)
    assert_clean(served, before)


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_request(served: ServedFabric, target: str) -> None:
    """Hostile requests to each server (``requests(target)``)."""

    @settings(FUZZ, max_examples=EXAMPLES[f"request:{target}"])
    @given(request=requests(target))
    def example(request: NetworkServiceRequest) -> None:
        RAN[f"request:{target}"] += 1
        request_and_clean_up(served, target, request)

    example()


@settings(FUZZ, max_examples=EXAMPLES["wireguard_offer:forwarder"])
@given(request=wireguard_offers())
def test_fuzz_forwarder_wireguard_offer(served: ServedFabric,
                                        request: NetworkServiceRequest) -> None:
    RAN["wireguard_offer:forwarder"] += 1
    request_and_clean_up(served, "forwarder", request)


@settings(FUZZ, max_examples=EXAMPLES["close:any"])
@given(target=st.sampled_from(TARGETS), conn=garbled_connections())
def test_fuzz_close_of_unknown_connections(served: ServedFabric, target: str,
                                           conn: Connection) -> None:
    RAN["close:any"] += 1
    before = served.state()
    outcome = served.call(target, "Close", conn)
    event(f"{target} close: {outcome.code.name}")
    check(outcome, "close")
    assert_clean(served, before)


@settings(FUZZ, max_examples=EXAMPLES["refresh:any"])
@given(pair=st.sampled_from(PAIRS), conn_id=st.uuids(), data=st.data(),
       as_close=st.booleans())
def test_fuzz_hostile_refresh_or_close_of_a_live_connection(
    served: ServedFabric, pair: tuple[str, str], conn_id: uuid.UUID, data: Any, as_close: bool,
) -> None:
    """A connection is established; then its own connection, changed in hostile ways, comes back
    as a refresh or a close. Closing what was accepted (the refresh's reply — the same connection
    or, under another id, a new one — then the original reply again) succeeds and leaves nothing
    behind."""
    RAN["refresh:any"] += 1
    target, endpoint = pair
    kinds = data.draw(st.lists(st.sampled_from(HOSTILE), min_size=1, max_size=2, unique=True))
    changed = valid_request(target, "changed", endpoint)
    for kind in kinds:  # everything is drawn before any call: draws never depend on replies
        mutate(data.draw, changed, kind, target)
    before = served.state()
    accepted = served.call(target, "Request", valid_request(target, str(conn_id), endpoint))
    assert accepted.code == grpc.StatusCode.OK, f"a valid request failed: {accepted}"
    hostile = valid_request(target, "x", endpoint)
    hostile.connection.CopyFrom(accepted.reply)
    for kind in kinds:
        overlay(kind, changed, hostile)
    if as_close:
        outcome = served.call(target, "Close", hostile.connection)
    else:
        outcome = served.call(target, "Request", hostile)
    event(f"{target} hostile {'close' if as_close else 'refresh'}: {outcome.code.name}")
    closes = served.close_accepted(target, [accepted] if as_close else [outcome, accepted])
    check(outcome, "close" if as_close else "refresh")
    check_closed(closes)
    assert_clean(served, before)


@settings(FUZZ, max_examples=EXAMPLES["same_id:any"])
@given(target=st.sampled_from(TARGETS), data=st.data(), together=st.booleans())
def test_fuzz_two_requests_with_the_same_id(served: ServedFabric, target: str, data: Any,
                                            together: bool) -> None:
    """Two different requests carrying one connection id, at once or one after the other: each
    is answered (a new connection, a refresh or an error) and closing what was accepted leaves
    nothing behind."""
    RAN["same_id:any"] += 1
    conn_id = str(data.draw(st.uuids()))
    pair = []
    for _ in range(2):
        request = data.draw(requests(target))
        request.connection.id = conn_id
        pair.append(request)
    before = served.state()
    if together:
        started = time.monotonic()
        futures = [served.start_call(target, "Request", r) for r in pair]
        outcomes = [served.finish_call(f, started) for f in futures]
    else:
        outcomes = [served.call(target, "Request", r) for r in pair]
    event(f"{target} {'together' if together else 'in turn'}: "
          + ", ".join(o.code.name for o in outcomes))
    closes = served.close_accepted(target, outcomes)
    for outcome in outcomes:
        check(outcome)
    check_closed(closes)
    assert_clean(served, before)


RAW_METHODS = ["/networkservice.NetworkService/Request", "/networkservice.NetworkService/Close"]


@settings(FUZZ, max_examples=EXAMPLES["raw_bytes:any"])
@given(target=st.sampled_from(TARGETS), method=st.sampled_from(RAW_METHODS),
       body=st.one_of(st.binary(max_size=512), st.builds(bytes, st.binary(max_size=8))))
def test_fuzz_raw_bytes_as_message(served: ServedFabric, target: str, method: str,
                                   body: bytes) -> None:
    """Bytes that may not even be a message. gRPC Python's own deserializer refuses undecodable
    bodies with UNKNOWN ("Error parsing message") before any fabric code runs (as for the
    registry); whatever decodes is a message like any other."""
    RAN["raw_bytes:any"] += 1
    before = served.state()
    started = time.monotonic()
    try:
        reply = served.channels[target].unary_unary(method)(body, timeout=WAIT)
    except grpc.RpcError as exc:
        outcome = Outcome(exc.code(), exc.details() or "", None,  # type: ignore[attr-defined]
                          time.monotonic() - started)
    else:
        outcome = Outcome(grpc.StatusCode.OK, "", reply, time.monotonic() - started)
    event(f"{target} {method.rsplit('/', 1)[1]}: {outcome.code.name}")
    closes = []
    if outcome.code == grpc.StatusCode.OK and method.endswith("Request"):
        accepted = Outcome(grpc.StatusCode.OK, "", Connection.FromString(outcome.reply), 0.0)
        closes = served.close_accepted(target, [accepted])
    if outcome.code != grpc.StatusCode.UNKNOWN or "Error parsing message" not in outcome.details:
        check(outcome)
    check_closed(closes)
    assert_clean(served, before)


# --- regressions: what the properties above found, as plain tests -------------------------------

def _with(target: str, change: Any, endpoint: str = "nse-local") -> NetworkServiceRequest:
    request = valid_request(target, str(uuid.uuid4()), endpoint)
    change(request)
    return request


def _param(key: str, value: str) -> Any:
    def change(request: NetworkServiceRequest) -> None:
        request.mechanism_preferences[0].parameters[key] = value
    return change


def _wireguard_offer(port: str) -> Any:
    def change(request: NetworkServiceRequest) -> None:
        del request.mechanism_preferences[:]
        request.mechanism_preferences.append(Mechanism(cls="REMOTE", type="WIREGUARD", parameters={
            "src_ip": "10.250.0.2", "src_port": port, "src_public_key": _KEY}))
    return change


def _expires(nanos: int) -> Any:
    def change(request: NetworkServiceRequest) -> None:
        request.connection.path.path_segments.add(name="nsmgr-n1", id=str(uuid.uuid4()))
        request.connection.path.path_segments[0].expires.nanos = nanos
    return change


def _repeated_segment_id(request: NetworkServiceRequest) -> None:
    conn_id = request.connection.id
    for name in ("nsmgr-n1", "forwarder-n1", "nsmgr-n1"):
        request.connection.path.path_segments.add(name=name, id=conn_id)


def _ip_context(**fields: Any) -> Any:
    def change(request: NetworkServiceRequest) -> None:
        ip = request.connection.context.ip_context
        for name, values in fields.items():
            getattr(ip, name).extend(values)
    return change


@pytest.mark.parametrize(
    ("target", "change", "field"),
    [
        # once INTERNAL (ValueError: '²'.isdigit() is true, int('²') fails)
        ("forwarder", _wireguard_offer("²"), "parameters[src_port]"),
        # once INTERNAL (ValueError from urlparse: Invalid IPv6 URL)
        ("nsmgr", _param("inodeURL", "file://[x"), "parameters[inodeURL]"),
        ("forwarder", _param("inodeURL", "inode://²/1"), "parameters[inodeURL]"),
        # once INTERNAL (Timeout read the caller's segment expiry with ToNanoseconds)
        ("nse", _expires(-1), "path_segments[0].expires"),
        # once a hang until the deadline: the nsmgr met its own call again further down the path
        ("nsmgr", _repeated_segment_id, "path_segments[1].id"),
        # once accepted, and 16 bytes (the kernel counts bytes) or cut short by netlink at the NUL
        ("nsmgr", _param("name", "é" * 8), "parameters[name]"),
        ("forwarder", _param("name", "nsm\x00"), "parameters[name]"),
        # (a zoned address and a route via an unreachable next hop in the client's own context
        # no longer reach the forwarder: the endpoint's IPAM answers with its own side only;
        # the forwarder's refusal of both is tested in tests/unit/test_vwire_answer_checks.py)
        # once RESOURCE_EXHAUSTED, which counted against the endpoint (ejected for everybody)
        ("nsmgr", _ip_context(excluded_prefixes=["0.0.0.0/0"]), "excluded_prefixes"),
    ],
    ids=["wireguard-port-superscript", "netns-url-bracket", "netns-inode-superscript",
         "expires-negative-nanos", "repeated-segment-id", "ifname-16-bytes", "ifname-nul",
         "exclude-everything"],
)
def test_found_by_fuzzing_is_refused_quickly_and_clearly(
    served: ServedFabric, target: str, change: Any, field: str
) -> None:
    before = served.state()
    outcome = served.call(target, "Request", _with(target, change))
    closes = served.close_accepted(target, [outcome])
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome
    assert field in outcome.details.partition(": ")[0], outcome.details
    check(outcome)
    check_closed(closes)
    assert_clean(served, before)


def test_found_by_fuzzing_a_long_value_is_not_echoed(served: ServedFabric) -> None:
    outcome = served.call("nsmgr", "Request", _with("nsmgr", _param("inodeURL", "x" * 4000)))
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(outcome.details) < 300, outcome.details  # once all 4000 characters, quoted


def test_found_by_fuzzing_a_second_request_with_the_same_id_refreshes(
    served: ServedFabric,
) -> None:
    """Once a second request with a live connection's id but without its path built a second
    connection downstream that no close ever reached (a vWire and tunnel on both nodes)."""
    before = served.state()
    first = valid_request("nsmgr", "same-id", "nse-remote")
    second = valid_request("nsmgr", "same-id", "nse-remote")
    second.mechanism_preferences[0].parameters["name"] = "other0"
    outcomes = [served.call("nsmgr", "Request", r) for r in (first, second)]
    closes = served.close_accepted("nsmgr", outcomes)
    assert [o.code for o in outcomes] == [grpc.StatusCode.OK] * 2, outcomes
    assert [s.id for s in outcomes[1].reply.path.path_segments[1:]] == [
        s.id for s in outcomes[0].reply.path.path_segments[1:]
    ]  # the same connection downstream, refreshed (onto the new interface name)
    check_closed(closes)
    assert_clean(served, before)


@pytest.mark.parametrize("keep", [0, 1], ids=["empty-path", "truncated-path"])
def test_found_by_fuzzing_a_close_with_a_cut_path(served: ServedFabric, keep: int) -> None:
    """Once a hang until the deadline (the close came back to the nsmgr under the id it was
    closing), after which the connection was forgotten but left everywhere downstream."""
    before = served.state()
    accepted = served.call("nsmgr", "Request", valid_request("nsmgr", str(uuid.uuid4())))
    assert accepted.code == grpc.StatusCode.OK, accepted
    cut = Connection()
    cut.CopyFrom(accepted.reply)
    del cut.path.path_segments[keep:]
    outcome = served.call("nsmgr", "Close", cut)
    closes = served.close_accepted("nsmgr", [accepted])
    assert outcome.code == grpc.StatusCode.OK and outcome.seconds < 2, outcome
    check_closed(closes)
    assert_clean(served, before)


def test_found_by_fuzzing_a_refresh_to_another_endpoint_closes_the_old_one(
    served: ServedFabric,
) -> None:
    """Once the forwarder's nsmgr sent the refresh to the new endpoint and left the connection
    at the old one (its addresses and monitor entry) for good."""
    before = served.state()
    first = valid_request("forwarder", "moving", "nse-local")
    moved = valid_request("forwarder", "moving", "nse-remote")
    outcomes = [served.call("forwarder", "Request", r) for r in (first, moved)]
    closes = served.close_accepted("forwarder", outcomes[1:])
    assert [o.code for o in outcomes] == [grpc.StatusCode.OK] * 2, outcomes
    assert outcomes[1].reply.network_service_endpoint_name == "nse-remote"
    check_closed(closes)
    assert_clean(served, before)


def test_one_clients_reselect_does_not_eject_the_endpoint_for_others(
    served: ServedFabric,
) -> None:
    """A client asking for another endpoint (the only one: it gets it back) is no evidence
    against the endpoint for the node's other clients."""
    accepted = served.call("nsmgr", "Request", valid_request("nsmgr", str(uuid.uuid4())))
    assert accepted.code == grpc.StatusCode.OK, accepted
    reselect = valid_request("nsmgr", "x")
    reselect.connection.CopyFrom(accepted.reply)
    reselect.connection.state = RESELECT_REQUESTED
    outcome = served.call("nsmgr", "Request", reselect)
    served.close_accepted("nsmgr", [outcome, accepted])
    try:
        other = served.call("nsmgr", "Request", valid_request("nsmgr", str(uuid.uuid4())))
        served.close_accepted("nsmgr", [other])
        assert other.code == grpc.StatusCode.OK, other  # not turned away
    finally:
        served.fabric.nodes[0].nsmgr.breaker.record_success("nse-local")  # type: ignore[union-attr]
