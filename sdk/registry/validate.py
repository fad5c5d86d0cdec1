"""Registry element ``Validate``: rejects malformed records before anything is stored.

Contract: on register and unregister the record is checked against the rules below; a violation
raises :class:`sdk.errors.InvalidArgument` naming the field and the rule, and the call goes no
further, so nothing is stored or announced. Find passes through (an empty template is valid).
It normalises one thing: a NetworkService with no payload gets NSM's default payload ``IP``.
Place it first in a registry server chain, after tracing/auth.

Rules: names are DNS-1123 subdomains (lower-case letters, digits, ``-`` and ``.``, starting and
ending with a letter or digit, at most 253 characters); endpoint URLs are ``unix:///path`` or
``tcp://host:port``; a payload is ``IP`` or ``ETHERNET``; label keys and values follow Kubernetes'
label syntax; counts of names, labels, matches, match routes and path IDs are bounded, and so
are the lengths of path IDs (a SPIFFE ID's maximum). Messages over the server's receive size
(:data:`sdk.limits.MAX_MESSAGE`) never reach this element: gRPC refuses them first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Generic, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.errors import InvalidArgument
from sdk.grpcutil import parse_address
from sdk.limits.shape import check_count, check_texts
from sdk.registry.core import RegistryCursor, RegistryElement
from sdk.registry.kinds import RecordKind
from sdk.security.spiffe import MAX_LENGTH

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)

MAX_NAME = 253
MAX_LABEL_KEY = 63
MAX_LABEL_VALUE = 63
MAX_LABELS = 64
MAX_SERVICES = 32
MAX_MATCHES = 64
MAX_URL = 1024
MAX_DESTINATIONS = 64  # routes of one match
MAX_PATH_IDS = 32
MAX_PATH_ID = MAX_LENGTH  # path IDs are SPIFFE IDs
PAYLOADS = ("IP", "ETHERNET")
MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31
URL_SCHEMES = ("unix", "tcp")

_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([a-z0-9.-]*[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?$")


def check_name(field: str, value: str) -> None:
    """Raise InvalidArgument unless ``value`` is a non-empty DNS-1123 subdomain."""
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > MAX_NAME:
        raise InvalidArgument(field, f"must be at most {MAX_NAME} characters (got {len(value)})")
    if not _NAME.match(value):
        raise InvalidArgument(
            field,
            f"{value!r} is not a valid name: use lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit",
        )


def check_labels(field: str, labels: Mapping[str, str]) -> None:
    """Raise InvalidArgument unless ``labels`` follow Kubernetes label syntax and size limits."""
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(field, f"at most {MAX_LABELS} labels (got {len(labels)})")
    for key, value in labels.items():
        name = key.rsplit("/", 1)[-1]
        if not key or len(name) > MAX_LABEL_KEY or len(key) > MAX_NAME or not _LABEL_KEY.match(key):
            raise InvalidArgument(
                f"{field}[{key!r}]",
                "label keys are [prefix/]name: name at most 63 letters, digits, '-', '_', '.', "
                "starting and ending with a letter or digit",
            )
        if len(value) > MAX_LABEL_VALUE or not _LABEL_VALUE.match(value):
            raise InvalidArgument(
                f"{field}[{key!r}]",
                "label values are at most 63 letters, digits, '-', '_', '.', "
                "starting and ending with a letter or digit (or empty)",
            )


def check_url(field: str, url: str) -> None:
    """Raise InvalidArgument unless ``url`` is ``unix:///path`` or ``tcp://host:port``."""
    if not url:
        raise InvalidArgument(field, "must not be empty: give unix:///path or tcp://host:port")
    if len(url) > MAX_URL:
        raise InvalidArgument(field, f"must be at most {MAX_URL} characters")
    parse_address(url, field)


def validate_service(ns: NetworkService) -> None:
    """Check a NetworkService record; fills in the default payload."""
    check_name("name", ns.name)
    if not ns.payload:
        ns.payload = "IP"
    if ns.payload not in PAYLOADS:
        raise InvalidArgument("payload", f"unknown payload {ns.payload!r}: use one of {PAYLOADS}")
    check_count("matches", ns.matches, MAX_MATCHES)
    check_texts("path_ids", ns.path_ids, MAX_PATH_IDS, MAX_PATH_ID)
    for i, match in enumerate(ns.matches):
        check_count(f"matches[{i}].routes", match.routes, MAX_DESTINATIONS)
        check_labels(f"matches[{i}].source_selector", match.source_selector)
        check_labels(f"matches[{i}].metadata.labels", match.metadata.labels)
        for j, route in enumerate(match.routes):
            check_labels(f"matches[{i}].routes[{j}].destination_selector",
                         route.destination_selector)


def check_timestamp(field: str, stamp: Timestamp) -> None:
    """Raise InvalidArgument unless ``stamp`` is within protobuf's Timestamp range."""
    if not (0 <= stamp.nanos < 1_000_000_000 and MIN_SECONDS <= stamp.seconds <= MAX_SECONDS):
        raise InvalidArgument(
            field, "out of range: seconds must be within years 1-9999 and nanos in [0, 1e9)"
        )


def validate_endpoint(nse: NetworkServiceEndpoint) -> None:
    """Check a NetworkServiceEndpoint record."""
    check_name("name", nse.name)
    check_url("url", nse.url)
    for field in ("expiration_time", "initial_registration_time"):
        if nse.HasField(field):
            check_timestamp(field, getattr(nse, field))
    check_count("network_service_names", nse.network_service_names, MAX_SERVICES)
    check_texts("path_ids", nse.path_ids, MAX_PATH_IDS, MAX_PATH_ID)
    for i, service in enumerate(nse.network_service_names):
        check_name(f"network_service_names[{i}]", service)
    for service, labels in nse.network_service_labels.items():
        if service not in nse.network_service_names:
            raise InvalidArgument(
                f"network_service_labels[{service!r}]",
                "labels are given for a service the endpoint does not list in "
                "network_service_names: add it there or remove the labels",
            )
        check_labels(f"network_service_labels[{service!r}]", labels.labels)


class Validate(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, kind: RecordKind[M]) -> None:
        self.kind: RecordKind[M] = kind

    def _check(self, record: M) -> None:
        if isinstance(record, NetworkService):
            validate_service(record)
        else:
            validate_endpoint(record)

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        self._check(record)
        return await next.register(record)

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        check_name("name", record.name)
        await next.unregister(record)
