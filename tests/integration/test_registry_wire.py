"""Wire compatibility with NSM v1: hand-encoded protobuf bytes through raw gRPC calls (registry
records, and a request for a service of another domain through two gateways), and the
method names and field numbers of the generated descriptors against NSM v1's own numbers.

The bytes here are written by hand from field numbers and wire types (no generated classes), the
way a client built from networkservicemesh/api's protos would put them on the wire.
"""

from __future__ import annotations

import time
from types import ModuleType

import grpc
import pytest

from api.proto import (
    connection_pb2,
    connectioncontext_pb2,
    ipam_pb2,
    networkservice_pb2,
    registry_pb2,
)
from tests.integration.conftest import WAIT
from tests.interdomain import two_domains

VARINT, LEN = 0, 2


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def len_field(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return tag(number, LEN) + varint(len(data)) + data


def varint_field(number: int, value: int) -> bytes:
    return tag(number, VARINT) + varint(value)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def decode(data: bytes) -> dict[int, list[int | bytes]]:
    """Field number → values, for varint and length-delimited fields (all NSM uses here)."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == VARINT:
            value, pos = read_varint(data, pos)
        elif wire_type == LEN:
            size, pos = read_varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        else:
            raise AssertionError(f"unexpected wire type {wire_type} for field {number}")
        fields.setdefault(number, []).append(value)
    return fields


def only(fields: dict[int, list[int | bytes]], number: int) -> bytes:
    (value,) = fields[number]
    assert isinstance(value, bytes)
    return value


def timestamp(seconds: int, nanos: int = 0) -> bytes:
    """google.protobuf.Timestamp: 1 seconds, 2 nanos."""
    return varint_field(1, seconds) + (varint_field(2, nanos) if nanos else b"")


def endpoint_bytes(name: str, services: list[str], url: str, expires: int) -> bytes:
    """registry.NetworkServiceEndpoint: 1 name, 2 network_service_names, 4 url,
    5 expiration_time."""
    return (
        len_field(1, name)
        + b"".join(len_field(2, s) for s in services)
        + len_field(4, url)
        + len_field(5, timestamp(expires, 250_000_000))
    )


async def test_raw_bytes_register_and_find(channel: grpc.aio.Channel) -> None:
    expires = int(time.time()) + 120
    register: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/registry.NetworkServiceEndpointRegistry/Register",
        request_serializer=None, response_deserializer=None,
    )
    request = endpoint_bytes("raw-nse", ["svc-a", "svc-b"], "tcp://192.0.2.1:5002", expires)
    reply = decode(await register(request, timeout=WAIT))
    assert only(reply, 1) == b"raw-nse"
    assert reply[2] == [b"svc-a", b"svc-b"]
    assert only(reply, 4) == b"tcp://192.0.2.1:5002"
    expiration = decode(only(reply, 5))
    assert expiration[1] == [expires]
    # Exactness of the nanos is tested (and currently broken) in test_registry_expiry_edges.py.
    assert abs(int(expiration[2][0]) - 250_000_000) < 1_000
    initial = decode(only(reply, 6))
    assert abs(int(initial[1][0]) - time.time()) < 60  # initial_registration_time set by server
    # The same bytes decode with the generated class too.
    parsed = registry_pb2.NetworkServiceEndpoint.FromString(request)
    assert (parsed.name, parsed.expiration_time.seconds) == ("raw-nse", expires)

    # NetworkServiceEndpointQuery: 1 network_service_endpoint (template), 2 watch.
    find: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
        "/registry.NetworkServiceEndpointRegistry/Find",
        request_serializer=None, response_deserializer=None,
    )
    query = len_field(1, len_field(2, "svc-b")) + varint_field(2, 0)
    responses = [decode(r) async for r in find(query, timeout=WAIT)]
    assert len(responses) == 1
    # NetworkServiceEndpointResponse: 1 network_service_endpoint, 2 deleted (absent = false).
    assert 2 not in responses[0]
    assert only(decode(only(responses[0], 1)), 1) == b"raw-nse"

    unregister: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/registry.NetworkServiceEndpointRegistry/Unregister",
        request_serializer=None, response_deserializer=None,
    )
    assert await unregister(len_field(1, "raw-nse"), timeout=WAIT) == b""  # google.protobuf.Empty
    assert [r async for r in find(query, timeout=WAIT)] == []


async def test_raw_bytes_network_service(channel: grpc.aio.Channel) -> None:
    register: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/registry.NetworkServiceRegistry/Register",
        request_serializer=None, response_deserializer=None,
    )
    # NetworkService: 1 name, 2 payload, 3 matches (Match: 1 source_selector map, 2 routes,
    # 3 fallthrough; Destination: 1 destination_selector map, 2 weight).
    entry = len_field(1, "app") + len_field(2, "web")
    route = len_field(1, len_field(1, "zone") + len_field(2, "a")) + varint_field(2, 7)
    match = len_field(1, entry) + len_field(2, route) + varint_field(3, 1)
    reply = await register(len_field(1, "raw-svc") + len_field(3, match), timeout=WAIT)
    fields = decode(reply)
    assert only(fields, 1) == b"raw-svc"
    assert only(fields, 2) == b"IP"  # the default payload, filled in by the registry
    got = registry_pb2.NetworkService.FromString(reply)
    assert dict(got.matches[0].source_selector) == {"app": "web"}
    assert got.matches[0].routes[0].weight == 7
    assert got.matches[0].fallthrough


#: NSM v1 (networkservicemesh/api) field numbers of the messages clients exchange with us.
NSM_FIELDS: dict[tuple[ModuleType, str], dict[str, int]] = {
    (connection_pb2, "Connection"): {
        "id": 1, "network_service": 2, "mechanism": 3, "context": 4, "labels": 5, "path": 6,
        "network_service_endpoint_name": 7, "payload": 8, "state": 9,
    },
    (connection_pb2, "Mechanism"): {"cls": 1, "type": 2, "parameters": 3},
    (connection_pb2, "PathSegment"): {"name": 1, "id": 2, "token": 3, "expires": 4, "metrics": 5},
    (connection_pb2, "Path"): {"index": 1, "path_segments": 2},
    (connection_pb2, "ConnectionEvent"): {"type": 1, "connections": 2},
    (connection_pb2, "MonitorScopeSelector"): {"path_segments": 1},
    (connectioncontext_pb2, "ConnectionContext"): {
        "ip_context": 1, "dns_context": 2, "ethernet_context": 3, "extra_context": 4, "MTU": 5,
    },
    (connectioncontext_pb2, "IPContext"): {
        "src_ip_addrs": 1, "dst_ip_addrs": 2, "src_ip_required": 3, "dst_ip_required": 4,
        "src_routes": 5, "dst_routes": 6, "excluded_prefixes": 7, "ip_neighbors": 8,
        "extra_prefix_request": 9, "extra_prefixes": 10, "policies": 11,
    },
    (connectioncontext_pb2, "Route"): {"prefix": 1, "nextHop": 2},
    (connectioncontext_pb2, "DNSConfig"): {"dns_server_ips": 1, "search_domains": 2},
    (networkservice_pb2, "NetworkServiceRequest"): {"connection": 1, "mechanism_preferences": 2},
    (registry_pb2, "NetworkServiceEndpoint"): {
        "name": 1, "network_service_names": 2, "network_service_labels": 3, "url": 4,
        "expiration_time": 5, "initial_registration_time": 6, "path_ids": 7,
    },
    (registry_pb2, "NetworkService"): {"name": 1, "payload": 2, "matches": 3, "path_ids": 4},
    (registry_pb2, "Match"): {"source_selector": 1, "routes": 2, "fallthrough": 3, "metadata": 4},
    (registry_pb2, "Destination"): {"destination_selector": 1, "weight": 2},
    (registry_pb2, "NetworkServiceEndpointQuery"): {"network_service_endpoint": 1, "watch": 2},
    (registry_pb2, "NetworkServiceQuery"): {"network_service": 1, "watch": 2},
    (registry_pb2, "NetworkServiceEndpointResponse"): {"network_service_endpoint": 1, "deleted": 2},
    (registry_pb2, "NetworkServiceResponse"): {"network_service": 1, "deleted": 2},
    (ipam_pb2, "PrefixRequest"): {"type": 1, "prefix": 2, "exclude_prefixes": 3},
    (ipam_pb2, "PrefixResponse"): {"prefix": 2, "exclude_prefixes": 3},
}

#: NSM v1 services: full name → {method: (client streams, server streams)}.
NSM_SERVICES: dict[tuple[ModuleType, str], dict[str, tuple[bool, bool]]] = {
    (networkservice_pb2, "networkservice.NetworkService"): {
        "Request": (False, False), "Close": (False, False),
    },
    (connection_pb2, "connection.MonitorConnection"): {"MonitorConnections": (False, True)},
    (registry_pb2, "registry.NetworkServiceRegistry"): {
        "Register": (False, False), "Find": (False, True), "Unregister": (False, False),
    },
    (registry_pb2, "registry.NetworkServiceEndpointRegistry"): {
        "Register": (False, False), "Find": (False, True), "Unregister": (False, False),
    },
    (ipam_pb2, "ipam.IPAM"): {"ManagePrefixes": (True, True)},
}


@pytest.mark.parametrize(
    ("module", "message"), list(NSM_FIELDS), ids=[m for _, m in NSM_FIELDS]
)
def test_field_numbers_match_nsm_v1(module: ModuleType, message: str) -> None:
    descriptor = module.DESCRIPTOR.message_types_by_name[message]
    expected = NSM_FIELDS[(module, message)]
    ours = {f.name: f.number for f in descriptor.fields}
    assert {name: ours.get(name) for name in expected} == expected
    # Extensions beyond NSM must not reuse a number NSM gives another field.
    nsm_numbers = set(expected.values())
    extra = {name: n for name, n in ours.items() if name not in expected}
    assert not nsm_numbers & set(extra.values()), extra


@pytest.mark.parametrize(
    ("module", "service"), list(NSM_SERVICES), ids=[s for _, s in NSM_SERVICES]
)
def test_services_and_methods_match_nsm_v1(module: ModuleType, service: str) -> None:
    package, _, short = service.rpartition(".")
    assert module.DESCRIPTOR.package == package
    descriptor = module.DESCRIPTOR.services_by_name[short]
    assert descriptor.full_name == service
    methods = {
        m.name: (m.client_streaming, m.server_streaming) for m in descriptor.methods
    }
    assert methods == NSM_SERVICES[(module, service)]
    for method in methods:  # the HTTP/2 paths clients call
        assert f"/{descriptor.full_name}/{method}" == f"/{service}/{method}"


def test_hand_encoder_agrees_with_protobuf() -> None:
    """Guard for the raw tests: the hand encoder produces what protobuf produces."""
    record = registry_pb2.NetworkServiceEndpoint(
        name="x", network_service_names=["a", "b"], url="unix:///s.sock"
    )
    record.expiration_time.seconds = 300
    record.expiration_time.nanos = 250_000_000
    assert endpoint_bytes("x", ["a", "b"], "unix:///s.sock", 300) == record.SerializeToString()


def map_entry(key: str, value: str) -> bytes:
    """One entry of a map<string, string> (1 key, 2 value)."""
    return len_field(1, key) + len_field(2, value)


async def test_raw_bytes_request_for_service_at_another_domain() -> None:
    """A client generated from NSM's protos asks the nsmgr of domain a for ``db@b`` and closes:
    the request crosses both gateways and the reply carries NSM's fields as NSM numbers them."""
    async with two_domains() as domains:
        a, b = domains.boxes["a"], domains.boxes["b"]
        a1, b1 = await a.node(), await b.node()
        await b.endpoint(b1, "nse-b", services=["db"])
        # Mechanism: 1 cls, 2 type, 3 parameters; Connection: 1 id, 2 network_service;
        # NetworkServiceRequest: 1 connection, 2 mechanism_preferences.
        mechanism = (len_field(1, "LOCAL") + len_field(2, "KERNEL")
                     + len_field(3, map_entry("inodeURL", "sandbox"))
                     + len_field(3, map_entry("name", "nsm0")))
        request = len_field(1, len_field(1, "raw-1") + len_field(2, "db@b")) + len_field(
            2, mechanism)
        assert assert_parses(request)
        channel = a.pool.get(a1.nsmgr_url)
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/networkservice.NetworkService/Request",
            request_serializer=None, response_deserializer=None,
        )
        reply = await call(request, timeout=WAIT)
        conn = decode(reply)
        assert only(conn, 1) == b"raw-1" and only(conn, 2) == b"db@b"
        assert only(conn, 7) == b"nse-b@b"  # the endpoint, named in its domain
        assert only(decode(only(conn, 3)), 2) == b"KERNEL"
        path = decode(only(conn, 6))
        segments = [only(decode(s), 1) for s in path[2] if isinstance(s, bytes)]
        hop = segments.index(b"gateway-a")
        assert segments[hop + 1] == b"gateway-b" and segments[-1] == b"nse-b", segments
        ip = decode(only(decode(only(conn, 4)), 1))
        assert only(ip, 2).startswith(b"10.80.")  # dst_ip_addrs: the endpoint's address
        close: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/networkservice.NetworkService/Close",
            request_serializer=None, response_deserializer=None,
        )
        assert await close(reply, timeout=WAIT) == b""  # google.protobuf.Empty
        assert all(not g.gateway.monitor.connections for g in domains.gateways.values())

        # The registry of domain a answers for domain b: NetworkServiceEndpointQuery with the
        # template's network_service_names (2) = ["db@b"].
        find: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = a.pool.get(
            a.registry_url).unary_stream(
            "/registry.NetworkServiceEndpointRegistry/Find",
            request_serializer=None, response_deserializer=None,
        )
        found = [decode(only(decode(r), 1)) async for r in find(
            len_field(1, len_field(2, "db@b")), timeout=WAIT)]
        assert [(only(r, 1), r[2]) for r in found] == [(b"nse-b@b", [b"db@b"])]


def assert_parses(request: bytes) -> bool:
    """The hand-made bytes are a NetworkServiceRequest for db@b (guard for the raw test)."""
    parsed = networkservice_pb2.NetworkServiceRequest.FromString(request)
    mechanism = parsed.mechanism_preferences[0]
    return (parsed.connection.network_service, mechanism.parameters["name"]) == ("db@b", "nsm0")
