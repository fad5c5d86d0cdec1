"""sdk.external: external-host records survive the registry's label rules both ways, and a
hostile record is refused naming the field, never echoing a key."""

from __future__ import annotations

import base64

import pytest

from api.proto.registry_pb2 import NetworkService
from sdk.errors import InvalidArgument
from sdk.external import (
    ExternalHost,
    ExternalStatus,
    parse_key,
    parse_request,
    parse_status,
    render_config,
    request_record,
    status_record,
)
from sdk.registry.validate import validate_service

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER = base64.b64encode(bytes(range(1, 33))).decode()


def test_request_round_trip_passes_the_registry_rules() -> None:
    host = ExternalHost("laptop-1", "secure.db", KEY)
    record = request_record(host)
    validate_service(record)  # what the registry checks before storing it
    assert record.name == "external.laptop-1"
    assert parse_request(record) == host


def test_status_round_trip_with_ipv6_passes_the_registry_rules() -> None:
    status = ExternalStatus(
        "h", "ready", ("2001:db8::1", 51900), OTHER, ("10.60.0.1/32", "fd00:60::1/128"),
        ("10.60.0.0/32", "fd00:60::/128", "192.168.0.0/16"), 1420, ("10.0.0.53", "fd00::53"))
    record = status_record(status)
    validate_service(record)
    assert parse_status(record) == status
    text = render_config(status, key_file="/k")
    assert "Endpoint = [2001:db8::1]:51900" in text
    assert f"PostUp = wg set %i private-key /k peer {OTHER} persistent-keepalive 25" in text
    assert "PersistentKeepalive" not in text  # on at link up, it would go out before the key
    assert "Address = 10.60.0.1/32, fd00:60::1/128" in text and "DNS = 10.0.0.53, fd00::53" in text


@pytest.mark.parametrize(("label", "value", "field"), [
    ("service", "Bad_Service", "service"),
    ("public-key", "zz", "public_key"),
    ("kind", "status", "matches"),
])
def test_hostile_request_is_refused_naming_the_field(label: str, value: str, field: str) -> None:
    record = request_record(ExternalHost("h", "db", KEY))
    record.matches[0].metadata.labels[f"external.vwire.io/{label}"] = value
    with pytest.raises(InvalidArgument) as caught:
        parse_request(record)
    assert caught.value.field == field


def test_hostile_status_values_are_refused() -> None:
    record = status_record(ExternalStatus("h", "ready", ("10.0.0.1", 1), KEY, ("10.1.0.1/32",)))
    for key, value in (("endpoint-port", "70000"), ("address-0", "10.1.0.999_32"),
                       ("state", "owned"), ("mtu", "12")):
        bad = NetworkService()
        bad.CopyFrom(record)
        bad.matches[0].metadata.labels[f"external.vwire.io/{key}"] = value
        with pytest.raises(InvalidArgument):
            parse_status(bad)


def test_a_bad_key_is_never_echoed() -> None:
    secret = base64.b64encode(b"x" * 31).decode()
    for value in (secret, secret + "!", "A" * 44):
        with pytest.raises(InvalidArgument) as caught:
            parse_key(value)
        assert value not in str(caught.value)
    with pytest.raises(InvalidArgument):
        request_record(ExternalHost("Bad Name", "db", KEY))


def test_served_host_request_round_trips_and_needs_one_address() -> None:
    host = ExternalHost("srv", "web", KEY, serve=True, address="192.168.77.10")
    record = request_record(host)
    validate_service(record)
    assert parse_request(record) == ExternalHost("srv", "web", KEY, True, "192.168.77.10/32")
    with pytest.raises(InvalidArgument) as caught:
        request_record(ExternalHost("srv", "web", KEY, serve=True, address="10.0.0.0/8"))
    assert caught.value.field == "address"
    record.matches[0].metadata.labels["external.vwire.io/mode"] = "proxy"
    with pytest.raises(InvalidArgument):
        parse_request(record)
