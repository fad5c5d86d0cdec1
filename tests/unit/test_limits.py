"""Shape limits of NetworkService messages (sdk.limits.check_request / check_connection): every
limit at its boundary — the limit passes, one more fails with InvalidArgument naming the field,
the size found and the limit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from api.proto.connection_pb2 import Connection, Mechanism
from api.proto.connectioncontext_pb2 import DNSConfig, Route
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import InvalidArgument
from sdk.limits import InFlightLimit, check_connection, check_request, limited_server
from sdk.limits import shape as limits

Fill = Callable[[NetworkServiceRequest, int], None]


@dataclass(frozen=True)
class Case:
    """Filling ``n`` items (or characters) into a request; ``field`` is where the error points."""

    name: str
    field: str
    limit: int
    fill: Fill


def ip(req: NetworkServiceRequest) -> Any:
    return req.connection.context.ip_context


def _adds(get: Callable[[NetworkServiceRequest], Any], **fields: Any) -> Fill:
    """Add ``n`` messages with ``fields`` to the repeated field ``get(req)``."""
    def fill(req: NetworkServiceRequest, n: int) -> None:
        repeated = get(req)
        for _ in range(n):
            repeated.add(**fields)
    return fill


def _labels(req: NetworkServiceRequest, n: int) -> None:
    req.connection.labels.update({f"k{i}": "v" for i in range(n)})


def _addrs(attr: str) -> Fill:
    return lambda req, n: getattr(ip(req), attr).extend(
        f"10.0.{i // 250}.{i % 250}/32" for i in range(n)
    )


def _routes(attr: str) -> Fill:
    return lambda req, n: getattr(ip(req), attr).extend(
        Route(prefix=f"10.{i // 250}.{i % 250}.0/24") for i in range(n)
    )


def _policy_routes(req: NetworkServiceRequest, n: int) -> None:
    req.connection.context.ip_context.policies.add().routes.extend(
        Route(prefix="10.0.0.0/8") for _ in range(n)
    )


def _segments(req: NetworkServiceRequest, n: int) -> None:
    for i in range(n):
        req.connection.path.path_segments.add(name=f"hop-{i}", id=f"id-{i}")


def _segment(**fields: str) -> Fill:
    def fill(req: NetworkServiceRequest, n: int) -> None:
        req.connection.path.path_segments.add(
            **{key: value * n for key, value in fields.items()}
        )
    return fill


def _dns(req: NetworkServiceRequest, n: int) -> None:
    req.connection.context.dns_context.configs.extend(
        DNSConfig(dns_server_ips=["10.0.0.53"]) for _ in range(n)
    )


def _dns_config(**fields: str) -> Fill:
    def fill(req: NetworkServiceRequest, n: int) -> None:
        config = req.connection.context.dns_context.configs.add()
        for key, value in fields.items():
            getattr(config, key).extend([value] * n)
    return fill


def _params(req: NetworkServiceRequest, n: int) -> None:
    req.mechanism_preferences.add(type="WIREGUARD").parameters.update(
        {f"p{i}": "x" for i in range(n)}
    )


def _text(setter: Callable[[NetworkServiceRequest, str], object]) -> Fill:
    """Set a string of ``n`` characters with ``setter``."""
    def fill(req: NetworkServiceRequest, n: int) -> None:
        setter(req, "a" * n)
    return fill


def _set(attr: str) -> Callable[[NetworkServiceRequest, str], None]:
    return lambda req, value: setattr(req.connection, attr, value)


CASES = [
    Case("id", "connection.id", limits.MAX_NAME, _text(_set("id"))),
    Case("service", "connection.network_service", limits.MAX_NAME,
         _text(_set("network_service"))),
    Case("endpoint", "connection.network_service_endpoint_name", limits.MAX_NAME,
         _text(_set("network_service_endpoint_name"))),
    Case("payload", "connection.payload", limits.MAX_NAME, _text(_set("payload"))),
    Case("labels", "connection.labels", limits.MAX_LABELS, _labels),
    Case("label-key", "connection.labels key", limits.MAX_LABEL_KEY,
         _text(lambda req, s: req.connection.labels.update({s: "v"}))),
    Case("label-value", "connection.labels['k']", limits.MAX_LABEL_VALUE,
         _text(lambda req, s: req.connection.labels.update({"k": s}))),
    Case("mechanism-type", "connection.mechanism.type", limits.MAX_NAME,
         _text(lambda req, s: setattr(req.connection.mechanism, "type", s))),
    Case("mechanism-params", "connection.mechanism.parameters", limits.MAX_MECHANISM_PARAMETERS,
         lambda req, n: req.connection.mechanism.parameters.update({str(i): "" for i in range(n)})),
    Case("src-ips", "connection.context.ip_context.src_ip_addrs", limits.MAX_IP_ADDRS,
         _addrs("src_ip_addrs")),
    Case("dst-ips", "connection.context.ip_context.dst_ip_addrs", limits.MAX_IP_ADDRS,
         _addrs("dst_ip_addrs")),
    Case("address-length", "connection.context.ip_context.src_ip_addrs[0]", limits.MAX_ADDRESS,
         _text(lambda req, s: req.connection.context.ip_context.src_ip_addrs.append(s))),
    Case("src-routes", "connection.context.ip_context.src_routes", limits.MAX_ROUTES,
         _routes("src_routes")),
    Case("dst-routes", "connection.context.ip_context.dst_routes", limits.MAX_ROUTES,
         _routes("dst_routes")),
    Case("route-prefix", "connection.context.ip_context.dst_routes[0].prefix", limits.MAX_ADDRESS,
         _text(lambda req, s: req.connection.context.ip_context.dst_routes.add(prefix=s))),
    Case("route-next-hop", "connection.context.ip_context.src_routes[0].nextHop",
         limits.MAX_ADDRESS,
         _text(lambda req, s: req.connection.context.ip_context.src_routes.add(nextHop=s))),
    Case("excluded", "connection.context.ip_context.excluded_prefixes",
         limits.MAX_EXCLUDED_PREFIXES, _addrs("excluded_prefixes")),
    Case("neighbors", "connection.context.ip_context.ip_neighbors", limits.MAX_IP_NEIGHBORS,
         _adds(lambda req: ip(req).ip_neighbors, ip="10.0.0.1")),
    Case("extra-prefix-requests", "connection.context.ip_context.extra_prefix_request",
         limits.MAX_EXTRA_PREFIX_REQUESTS,
         _adds(lambda req: ip(req).extra_prefix_request, prefix_len=24)),
    Case("extra-prefixes", "connection.context.ip_context.extra_prefixes",
         limits.MAX_EXTRA_PREFIXES, _addrs("extra_prefixes")),
    Case("policies", "connection.context.ip_context.policies", limits.MAX_POLICIES,
         _adds(lambda req: ip(req).policies, proto="tcp")),
    Case("policy-routes", "connection.context.ip_context.policies[0].routes", limits.MAX_ROUTES,
         _policy_routes),
    Case("dns-configs", "connection.context.dns_context.configs", limits.MAX_DNS_CONFIGS, _dns),
    Case("dns-servers", "connection.context.dns_context.configs[0].dns_server_ips",
         limits.MAX_DNS_SERVERS, _dns_config(dns_server_ips="10.0.0.53")),
    Case("search-domains", "connection.context.dns_context.configs[0].search_domains",
         limits.MAX_SEARCH_DOMAINS, _dns_config(search_domains="example.org")),
    Case("domain-length", "connection.context.dns_context.configs[0].search_domains[0]",
         limits.MAX_DOMAIN,
         _text(lambda req, s: req.connection.context.dns_context.configs.add().search_domains
               .append(s))),
    Case("mac", "connection.context.ethernet_context.src_mac", limits.MAX_ADDRESS,
         _text(lambda req, s: setattr(req.connection.context.ethernet_context, "src_mac", s))),
    Case("extra-context", "connection.context.extra_context", limits.MAX_EXTRA_CONTEXT,
         lambda req, n: req.connection.context.extra_context.update(
             {str(i): "" for i in range(n)})),
    Case("extra-context-value", "connection.context.extra_context['k']",
         limits.MAX_EXTRA_CONTEXT_VALUE,
         _text(lambda req, s: req.connection.context.extra_context.update({"k": s}))),
    Case("segments", "connection.path.path_segments", limits.MAX_PATH_SEGMENTS, _segments),
    Case("segment-name", "connection.path.path_segments[0].name", limits.MAX_NAME,
         _segment(name="a")),
    Case("segment-token", "connection.path.path_segments[0].token", limits.MAX_TOKEN,
         _segment(token="t")),
    Case("segment-metrics", "connection.path.path_segments[0].metrics",
         limits.MAX_SEGMENT_METRICS,
         lambda req, n: req.connection.path.path_segments.add().metrics.update(
             {str(i): "1" for i in range(n)})),
    Case("preferences", "mechanism_preferences", limits.MAX_MECHANISM_PREFERENCES,
         _adds(lambda req: req.mechanism_preferences, cls="LOCAL", type="KERNEL")),
    Case("preference-params", "mechanism_preferences[0].parameters",
         limits.MAX_MECHANISM_PARAMETERS, _params),
    Case("preference-param-value", "mechanism_preferences[0].parameters['k']",
         limits.MAX_PARAMETER_VALUE,
         _text(lambda req, s: req.mechanism_preferences.add().parameters.update({"k": s}))),
    Case("preference-param-key", "mechanism_preferences[0].parameters key",
         limits.MAX_PARAMETER_KEY,
         _text(lambda req, s: req.mechanism_preferences.add().parameters.update({s: "v"}))),
    Case("preference-cls", "mechanism_preferences[0].cls", limits.MAX_NAME,
         _text(lambda req, s: setattr(req.mechanism_preferences.add(), "cls", s))),
]


def filled(case: Case, n: int) -> NetworkServiceRequest:
    req = NetworkServiceRequest()
    case.fill(req, n)
    return req


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_request_limit_passes_and_one_more_fails_naming_the_field(case: Case) -> None:
    check_request(filled(case, case.limit))
    with pytest.raises(InvalidArgument) as caught:
        check_request(filled(case, case.limit + 1))
    assert caught.value.field.startswith(case.field), caught.value
    assert str(case.limit) in caught.value.problem
    assert f"got {case.limit + 1}" in caught.value.problem


CONNECTION_CASES = [c for c in CASES if c.field.startswith("connection.")]


@pytest.mark.parametrize("case", CONNECTION_CASES, ids=[c.name for c in CONNECTION_CASES])
def test_connection_limit_names_top_level_fields(case: Case) -> None:
    check_connection(filled(case, case.limit).connection)
    with pytest.raises(InvalidArgument) as caught:
        check_connection(filled(case, case.limit + 1).connection)
    assert caught.value.field.startswith(case.field.removeprefix("connection.")), caught.value
    assert f"got {case.limit + 1}" in caught.value.problem


def test_the_message_names_field_count_and_limit() -> None:
    req = NetworkServiceRequest()
    _labels(req, limits.MAX_LABELS + 1)
    with pytest.raises(InvalidArgument) as caught:
        check_request(req)
    assert str(caught.value) == "connection.labels: at most 64 entries (got 65)"


def test_a_realistic_request_passes_and_is_not_modified() -> None:
    req = NetworkServiceRequest(
        connection=Connection(id="c-1", network_service="secure-db", labels={"app": "web"}),
        mechanism_preferences=[
            Mechanism(cls="LOCAL", type="KERNEL", parameters={"name": "nsm0"}),
            Mechanism(cls="REMOTE", type="WIREGUARD", parameters={"src_public_key": "k" * 44}),
        ],
    )
    ipc = req.connection.context.ip_context
    ipc.src_ip_addrs.append("169.254.0.1/32")
    ipc.dst_ip_addrs.append("169.254.0.2/32")
    ipc.src_routes.add(prefix="169.254.0.2/32")
    req.connection.context.dns_context.configs.add(dns_server_ips=["10.0.0.53"],
                                                   search_domains=["svc.cluster.local"])
    _segments(req, 6)
    before = req.SerializeToString()
    check_request(req)
    check_connection(req.connection)
    assert req.SerializeToString() == before


@pytest.mark.parametrize("kwargs", [{"max_per_peer": 0}, {"max_streams_per_peer": 0}])
def test_in_flight_limits_must_be_positive(kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidArgument, match="must be at least 1"):
        InFlightLimit(**kwargs)


def test_limited_server_refuses_a_zero_message_size() -> None:
    with pytest.raises(InvalidArgument, match="max_message"):
        limited_server(max_message=0)
