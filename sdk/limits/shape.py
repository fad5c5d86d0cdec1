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

from collections.abc import Iterable, Mapping

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


def _join(prefix: str, field: str) -> str:
    return f"{prefix}.{field}" if prefix else field


def _text(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidArgument(field, f"must be at most {limit} characters (got {len(value)})")


def check_count(field: str, items: Iterable[object], limit: int) -> None:
    count = sum(1 for _ in items)
    if count > limit:
        raise InvalidArgument(field, f"at most {limit} entries (got {count})")


def check_texts(field: str, values: Iterable[str], count: int, length: int) -> None:
    """At most ``count`` values, each at most ``length`` characters."""
    values = list(values)
    check_count(field, values, count)
    for i, value in enumerate(values):
        _text(f"{field}[{i}]", value, length)


def _map(field: str, pairs: Mapping[str, str], count: int, key_len: int, value_len: int) -> None:
    check_count(field, pairs, count)
    for key, value in pairs.items():
        _text(f"{field} key {key[:32]!r}", key, key_len)
        _text(f"{field}[{key!r}]", value, value_len)


def _routes(field: str, routes: Iterable[Route]) -> None:
    routes = list(routes)
    check_count(field, routes, MAX_ROUTES)
    for i, route in enumerate(routes):
        _text(f"{field}[{i}].prefix", route.prefix, MAX_ADDRESS)
        _text(f"{field}[{i}].nextHop", route.nextHop, MAX_ADDRESS)


def check_mechanism(mechanism: Mechanism, field: str) -> None:
    """Raise InvalidArgument if ``mechanism`` (named ``field``) exceeds a limit."""
    _text(_join(field, "cls"), mechanism.cls, MAX_NAME)
    _text(_join(field, "type"), mechanism.type, MAX_NAME)
    _map(_join(field, "parameters"), mechanism.parameters, MAX_MECHANISM_PARAMETERS,
         MAX_PARAMETER_KEY, MAX_PARAMETER_VALUE)


def check_context(context: ConnectionContext, field: str) -> None:
    """Raise InvalidArgument if a ConnectionContext (named ``field``) exceeds a limit."""
    ip = context.ip_context
    at = _join(field, "ip_context")
    check_texts(_join(at, "src_ip_addrs"), ip.src_ip_addrs, MAX_IP_ADDRS, MAX_ADDRESS)
    check_texts(_join(at, "dst_ip_addrs"), ip.dst_ip_addrs, MAX_IP_ADDRS, MAX_ADDRESS)
    _routes(_join(at, "src_routes"), ip.src_routes)
    _routes(_join(at, "dst_routes"), ip.dst_routes)
    check_texts(_join(at, "excluded_prefixes"), ip.excluded_prefixes, MAX_EXCLUDED_PREFIXES,
                MAX_ADDRESS)
    check_count(_join(at, "ip_neighbors"), ip.ip_neighbors, MAX_IP_NEIGHBORS)
    for i, neighbor in enumerate(ip.ip_neighbors):
        _text(_join(at, f"ip_neighbors[{i}].ip"), neighbor.ip, MAX_ADDRESS)
        _text(_join(at, f"ip_neighbors[{i}].hardware_address"), neighbor.hardware_address,
              MAX_ADDRESS)
    check_count(_join(at, "extra_prefix_request"), ip.extra_prefix_request,
                MAX_EXTRA_PREFIX_REQUESTS)
    check_texts(_join(at, "extra_prefixes"), ip.extra_prefixes, MAX_EXTRA_PREFIXES, MAX_ADDRESS)
    check_count(_join(at, "policies"), ip.policies, MAX_POLICIES)
    for i, policy in enumerate(ip.policies):
        pf = _join(at, f"policies[{i}]")
        for name in ("from", "proto", "dst_port", "src_port"):
            _text(f"{pf}.{name}", getattr(policy, name), MAX_ADDRESS)
        _routes(f"{pf}.routes", policy.routes)
    dns = _join(field, "dns_context.configs")
    check_count(dns, context.dns_context.configs, MAX_DNS_CONFIGS)
    for i, config in enumerate(context.dns_context.configs):
        check_texts(f"{dns}[{i}].dns_server_ips", config.dns_server_ips, MAX_DNS_SERVERS,
                    MAX_ADDRESS)
        check_texts(f"{dns}[{i}].search_domains", config.search_domains, MAX_SEARCH_DOMAINS,
                    MAX_DOMAIN)
    eth = _join(field, "ethernet_context")
    _text(f"{eth}.src_mac", context.ethernet_context.src_mac, MAX_ADDRESS)
    _text(f"{eth}.dst_mac", context.ethernet_context.dst_mac, MAX_ADDRESS)
    _map(_join(field, "extra_context"), context.extra_context, MAX_EXTRA_CONTEXT,
         MAX_PARAMETER_KEY, MAX_EXTRA_CONTEXT_VALUE)


def check_connection(conn: Connection, field: str = "") -> None:
    """Raise InvalidArgument if ``conn`` exceeds a limit; fields are named under ``field``
    (empty: top level, as for Close, whose message is the Connection)."""
    for name in ("id", "network_service", "network_service_endpoint_name", "payload"):
        _text(_join(field, name), getattr(conn, name), MAX_NAME)
    check_mechanism(conn.mechanism, _join(field, "mechanism"))
    check_context(conn.context, _join(field, "context"))
    _map(_join(field, "labels"), conn.labels, MAX_LABELS, MAX_LABEL_KEY, MAX_LABEL_VALUE)
    segments = _join(field, "path.path_segments")
    check_count(segments, conn.path.path_segments, MAX_PATH_SEGMENTS)
    for i, segment in enumerate(conn.path.path_segments):
        _text(f"{segments}[{i}].name", segment.name, MAX_NAME)
        _text(f"{segments}[{i}].id", segment.id, MAX_NAME)
        _text(f"{segments}[{i}].token", segment.token, MAX_TOKEN)
        _map(f"{segments}[{i}].metrics", segment.metrics, MAX_SEGMENT_METRICS, MAX_LABEL_KEY,
             MAX_LABEL_VALUE)


def check_request(request: NetworkServiceRequest) -> None:
    """Raise InvalidArgument if ``request`` (its connection and mechanism preferences) exceeds a
    limit."""
    check_connection(request.connection, "connection")
    check_count("mechanism_preferences", request.mechanism_preferences, MAX_MECHANISM_PREFERENCES)
    for i, mechanism in enumerate(request.mechanism_preferences):
        check_mechanism(mechanism, f"mechanism_preferences[{i}]")
