"""Size and count limits of NetworkService messages: hostile input gets a status, never an outage.

Contract: :func:`check_request` / :func:`check_connection` check the *shape* of a NetworkService
message (lengths of strings, numbers of labels, addresses, routes, segments, parameters ...)
against the constants below and raise :class:`sdk.errors.InvalidArgument` naming the field, the
size found and the limit, e.g. ``"connection.labels: at most 64 entries (got 65)"``. They do not
judge meaning (whether an address parses, whether an index points into the path): that is the
chain's job. They never modify the message. :func:`check_count` and :func:`check_texts` are the
shared count and length rules (the registry's validation uses them too).
"""


from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Sized

from api.proto.connection_pb2 import Connection, Mechanism
from api.proto.connectioncontext_pb2 import ConnectionContext, Route
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import InvalidArgument
from sdk.security.token import MAX_TOKEN

MAX_NAME = 256  # ids, names, mechanism class/type, payload, segment names
MAX_LABELS = 64
MAX_LABEL_KEY = 256
MAX_LABEL_VALUE = 1024
MAX_MECHANISM_PREFERENCES = 16
MAX_MECHANISM_PARAMETERS = 64
MAX_PARAMETER_KEY = 256
MAX_PARAMETER_VALUE = 4096
MAX_PATH_SEGMENTS = 32
MAX_SEGMENT_METRICS = 64
MAX_ADDRESS = 64  # an IP address or prefix, "<address>/<len>", a MAC, a port range
MAX_IP_ADDRS = 16  # each of src_ip_addrs, dst_ip_addrs
MAX_ROUTES = 256  # each of src_routes, dst_routes, and the routes of one policy
MAX_EXCLUDED_PREFIXES = 1024
MAX_IP_NEIGHBORS = 256
MAX_EXTRA_PREFIX_REQUESTS = 16
MAX_EXTRA_PREFIXES = 256
MAX_POLICIES = 64
MAX_DNS_CONFIGS = 8
MAX_DNS_SERVERS = 16
MAX_SEARCH_DOMAINS = 16
MAX_DOMAIN = 253
MAX_EXTRA_CONTEXT = 64
MAX_EXTRA_CONTEXT_VALUE = 4096


Part = str | int  # a field name, or an index into the repeated field named before it


def _name(where: tuple[Part, ...]) -> str:
    """The dotted name of a field, made only when a check fails (most calls pass, and a name
    per field and item was most of the checks' cost)."""
    name = ""
    for part in where:
        if isinstance(part, int):
            name += f"[{part}]"
        elif part:
            name = f"{name}.{part}" if name else part
    return name


def _text(value: str, limit: int, *where: Part) -> None:
    if len(value) > limit:
        raise InvalidArgument(_name(where),
                              f"must be at most {limit} characters (got {len(value)})")


def _count(items: Sized, limit: int, *where: Part) -> None:
    if len(items) > limit:
        raise InvalidArgument(_name(where), f"at most {limit} entries (got {len(items)})")


def _texts(values: Sequence[str], count: int, length: int, *where: Part) -> None:
    _count(values, count, *where)
    for i, value in enumerate(values):
        _text(value, length, *where, i)


def check_count(field: str, items: Iterable[object], limit: int) -> None:
    _count(items if isinstance(items, Sized) else list(items), limit, field)


def check_texts(field: str, values: Iterable[str], count: int, length: int) -> None:
    """At most ``count`` values, each at most ``length`` characters."""
    _texts(values if isinstance(values, Sequence) else list(values), count, length, field)


def _map(pairs: Mapping[str, str], count: int, key_len: int, value_len: int,
         *where: Part) -> None:
    _count(pairs, count, *where)
    for key, value in pairs.items():
        if len(key) > key_len:
            _text(key, key_len, f"{_name(where)} key {key[:32]!r}")
        if len(value) > value_len:
            _text(value, value_len, f"{_name(where)}[{key!r}]")


def _routes(routes: Sequence[Route], *where: Part) -> None:
    _count(routes, MAX_ROUTES, *where)
    for i, route in enumerate(routes):
        _text(route.prefix, MAX_ADDRESS, *where, i, "prefix")
        _text(route.nextHop, MAX_ADDRESS, *where, i, "nextHop")


def check_mechanism(mechanism: Mechanism, field: str) -> None:
    """Raise InvalidArgument if ``mechanism`` (named ``field``) exceeds a limit."""
    _mechanism(mechanism, field)


def _mechanism(mechanism: Mechanism, *where: Part) -> None:
    _text(mechanism.cls, MAX_NAME, *where, "cls")
    _text(mechanism.type, MAX_NAME, *where, "type")
    _map(mechanism.parameters, MAX_MECHANISM_PARAMETERS, MAX_PARAMETER_KEY,
         MAX_PARAMETER_VALUE, *where, "parameters")


def check_context(context: ConnectionContext, field: str) -> None:
    """Raise InvalidArgument if a ConnectionContext (named ``field``) exceeds a limit."""
    _context(context, field)


def _context(context: ConnectionContext, *where: Part) -> None:
    ip = context.ip_context
    at = (*where, "ip_context")
    _texts(ip.src_ip_addrs, MAX_IP_ADDRS, MAX_ADDRESS, *at, "src_ip_addrs")
    _texts(ip.dst_ip_addrs, MAX_IP_ADDRS, MAX_ADDRESS, *at, "dst_ip_addrs")
    _routes(ip.src_routes, *at, "src_routes")
    _routes(ip.dst_routes, *at, "dst_routes")
    _texts(ip.excluded_prefixes, MAX_EXCLUDED_PREFIXES, MAX_ADDRESS, *at, "excluded_prefixes")
    _count(ip.ip_neighbors, MAX_IP_NEIGHBORS, *at, "ip_neighbors")
    for i, neighbor in enumerate(ip.ip_neighbors):
        _text(neighbor.ip, MAX_ADDRESS, *at, "ip_neighbors", i, "ip")
        _text(neighbor.hardware_address, MAX_ADDRESS, *at, "ip_neighbors", i, "hardware_address")
    _count(ip.extra_prefix_request, MAX_EXTRA_PREFIX_REQUESTS, *at, "extra_prefix_request")
    _texts(ip.extra_prefixes, MAX_EXTRA_PREFIXES, MAX_ADDRESS, *at, "extra_prefixes")
    _count(ip.policies, MAX_POLICIES, *at, "policies")
    for i, policy in enumerate(ip.policies):
        for name in ("from", "proto", "dst_port", "src_port"):
            _text(getattr(policy, name), MAX_ADDRESS, *at, "policies", i, name)
        _routes(policy.routes, *at, "policies", i, "routes")
    dns = (*where, "dns_context.configs")
    _count(context.dns_context.configs, MAX_DNS_CONFIGS, *dns)
    for i, config in enumerate(context.dns_context.configs):
        _texts(config.dns_server_ips, MAX_DNS_SERVERS, MAX_ADDRESS, *dns, i, "dns_server_ips")
        _texts(config.search_domains, MAX_SEARCH_DOMAINS, MAX_DOMAIN, *dns, i, "search_domains")
    eth = context.ethernet_context
    _text(eth.src_mac, MAX_ADDRESS, *where, "ethernet_context.src_mac")
    _text(eth.dst_mac, MAX_ADDRESS, *where, "ethernet_context.dst_mac")
    _map(context.extra_context, MAX_EXTRA_CONTEXT, MAX_PARAMETER_KEY, MAX_EXTRA_CONTEXT_VALUE,
         *where, "extra_context")


def check_connection(conn: Connection, field: str = "") -> None:
    """Raise InvalidArgument if ``conn`` exceeds a limit; fields are named under ``field``
    (empty: top level, as for Close, whose message is the Connection)."""
    for name in ("id", "network_service", "network_service_endpoint_name", "payload"):
        _text(getattr(conn, name), MAX_NAME, field, name)
    _mechanism(conn.mechanism, field, "mechanism")
    _context(conn.context, field, "context")
    _map(conn.labels, MAX_LABELS, MAX_LABEL_KEY, MAX_LABEL_VALUE, field, "labels")
    segments = (field, "path.path_segments")
    _count(conn.path.path_segments, MAX_PATH_SEGMENTS, *segments)
    for i, segment in enumerate(conn.path.path_segments):
        _text(segment.name, MAX_NAME, *segments, i, "name")
        _text(segment.id, MAX_NAME, *segments, i, "id")
        _text(segment.token, MAX_TOKEN, *segments, i, "token")
        _map(segment.metrics, MAX_SEGMENT_METRICS, MAX_LABEL_KEY, MAX_LABEL_VALUE,
             *segments, i, "metrics")


def check_request(request: NetworkServiceRequest) -> None:
    """Raise InvalidArgument if ``request`` (its connection and mechanism preferences) exceeds a
    limit."""
    check_connection(request.connection, "connection")
    preferences = request.mechanism_preferences
    _count(preferences, MAX_MECHANISM_PREFERENCES, "mechanism_preferences")
    for i, mechanism in enumerate(preferences):
        _mechanism(mechanism, "mechanism_preferences", i)
