"""External hosts: what an operator asks for and what the fabric set up, as registry records.

An *external host* runs none of the fabric and reaches a network service over plain WireGuard
(docs/external.md). Two records in the domain's registry describe one, both NetworkService
records (they never expire, the registry persists them, and NSM's wire format stays untouched):

* the **request** ``external.NAME`` (written by ``nsmctl external add``): the service, the
  host's WireGuard public key and, for a host that *serves* the service (an external server
  that clients of the domain request), its tunnel address; removing it revokes the host;
* the **status** ``external-status.NAME`` (written by the ``external`` process that serves the
  host): the WireGuard endpoint to dial, the fabric side's public key, the host's addresses, the
  prefixes it routes into the vWire, MTU and DNS servers, or the failure.

Each record holds its fields as labels of one ``Match``'s metadata (``external.vwire.io/...``).
Label values allow only ``[A-Za-z0-9._-]``, so keys are stored as lower-case base32 and
addresses with ``:`` as ``-`` and ``/`` as ``_``; :func:`parse_request` and :func:`parse_status`
validate everything they decode (a record is hostile input: anyone who may write the registry
may write one) and raise :class:`sdk.errors.InvalidArgument` naming the field.

Private keys never appear in these records: the host makes its own (``wg genkey``) and only its
public key is stored; :func:`render_config` writes the host's wg-quick file.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from api.proto.registry_pb2 import Match, NetworkService
from sdk.errors import InvalidArgument

REQUEST_PREFIX = "external."
STATUS_PREFIX = "external-status."
LABEL = "external.vwire.io/"
KEY_LEN = 32
MAX_NAME = 40
MAX_SERVICE = 63
MAX_LIST = 16
STATES = ("ready", "failed")

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_SERVICE = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
_CODE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class ExternalHost:
    """The operator's request: host ``name`` may reach ``service`` with key ``public_key``; or,
    with ``serve``, host ``name`` *provides* ``service`` at its tunnel ``address`` (an external
    server that clients of the domain request)."""

    name: str
    service: str
    public_key: str  # base64, as `wg pubkey` prints it
    serve: bool = False
    address: str = ""  # with serve: the server's own address inside the tunnel (ip/32, ip/128)


@dataclass(frozen=True)
class ExternalStatus:
    """What the serving process set up for host ``name`` (``state`` ready) or why it could not
    (``state`` failed, ``error`` the error's class such as ``NotFound``)."""

    name: str
    state: str
    endpoint: tuple[str, int] | None = None  # where the host dials (ip, udp port)
    public_key: str = ""  # the fabric side's WireGuard public key (base64)
    addresses: tuple[str, ...] = ()  # the host's own addresses (CIDRs, /32 or /128)
    allowed_ips: tuple[str, ...] = ()  # what the host routes into the tunnel (CIDRs)
    mtu: int = 0
    dns: tuple[str, ...] = ()
    error: str = ""


# -- validation ---------------------------------------------------------------------------------


def check_name(value: object, field: str = "name") -> str:
    """A host name: a DNS label of at most 40 characters."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(field, "must not be empty: use lower-case letters, digits and '-'")
    if len(value) > MAX_NAME or not _NAME.match(value):
        raise InvalidArgument(
            field, f"{value[:80]!r} is not a valid host name: use at most {MAX_NAME} lower-case "
            "letters, digits and '-', starting and ending with a letter or digit")
    return value


def check_service(value: object, field: str = "service") -> str:
    """A network service name (DNS-1123, at most 63 characters)."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(field, "must not be empty: give the network service to reach")
    if len(value) > MAX_SERVICE or not _SERVICE.match(value):
        raise InvalidArgument(
            field, f"{value[:80]!r} is not a valid service name: use at most {MAX_SERVICE} "
            "lower-case letters, digits, '-' and '.', starting and ending with a letter or digit")
    return value


def parse_key(value: object, field: str = "public_key") -> str:
    """A WireGuard key: base64 of 32 bytes, returned canonical. The message never repeats the
    text (a private key pasted by mistake must not be echoed)."""
    if not isinstance(value, str):
        raise InvalidArgument(field, "must be a base64 string of 32 bytes")
    try:
        raw = base64.b64decode(value.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidArgument(
            field, "is not valid base64: use the 44-character form `wg pubkey` prints") from None
    if len(raw) != KEY_LEN:
        raise InvalidArgument(field, f"must decode to {KEY_LEN} bytes (got {len(raw)})")
    return base64.b64encode(raw).decode("ascii")


def _check_cidr(value: str, field: str) -> str:
    try:
        return str(ipaddress.ip_interface(value))
    except ValueError:
        raise InvalidArgument(field, f"{value[:80]!r} is not an address with a prefix") from None


def check_host_address(value: object, field: str = "address") -> str:
    """A server's tunnel address: one IP, returned as ``ip/32`` or ``ip/128``."""
    text = value if isinstance(value, str) else ""
    try:
        ip = ipaddress.ip_interface(text)
    except ValueError:
        raise InvalidArgument(field, f"{text[:80]!r} is not an IP address such as "
                              "192.168.50.10") from None
    if ip.network.prefixlen != ip.max_prefixlen:
        raise InvalidArgument(field, "must be one address (/32 or /128), not a prefix")
    return f"{ip.ip}/{ip.max_prefixlen}"


def _check_ip(value: str, field: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidArgument(field, f"{value[:80]!r} is not an IP address") from None


# -- label encoding -----------------------------------------------------------------------------


def _key_label(key: str) -> str:
    return base64.b32encode(base64.b64decode(key)).decode("ascii").rstrip("=").lower()


def _key_unlabel(text: str, field: str) -> str:
    try:
        raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise InvalidArgument(field, "is not a base32 key") from None
    return parse_key(base64.b64encode(raw).decode("ascii"), field)


def _addr_label(text: str) -> str:
    address, _, prefix = text.partition("/")
    ip = ipaddress.ip_address(address)
    shown = ip.exploded.replace(":", "-") if ip.version == 6 else str(ip)
    return f"{shown}_{prefix}" if prefix else shown


def _addr_unlabel(text: str) -> str:
    return text.replace("-", ":").replace("_", "/")


def _list(labels: Mapping[str, str], field: str) -> list[str]:
    found = []
    for i in range(MAX_LIST):
        value = labels.get(f"{LABEL}{field}-{i}")
        if value is None:
            break
        found.append(value)
    return found


def _put_list(labels: dict[str, str], field: str, values: Sequence[str]) -> None:
    if len(values) > MAX_LIST:
        raise InvalidArgument(field, f"at most {MAX_LIST} entries (got {len(values)})")
    for i, value in enumerate(values):
        labels[f"{LABEL}{field}-{i}"] = _addr_label(value)


def _record(name: str, labels: Mapping[str, str]) -> NetworkService:
    record = NetworkService(name=name, payload="IP")
    record.matches.append(Match())
    record.matches[0].metadata.labels.update(labels)
    return record


def _labels(record: NetworkService, kind: str) -> dict[str, str]:
    if len(record.matches) != 1:
        raise InvalidArgument("matches", f"an external-host {kind} record has exactly one match")
    labels = dict(record.matches[0].metadata.labels)
    if labels.get(f"{LABEL}kind") != kind:
        raise InvalidArgument("matches", f"not an external-host {kind} record")
    return labels


# -- records ------------------------------------------------------------------------------------


def request_name(name: str) -> str:
    """The registry name of host ``name``'s request record."""
    return REQUEST_PREFIX + check_name(name)


def status_name(name: str) -> str:
    """The registry name of host ``name``'s status record."""
    return STATUS_PREFIX + check_name(name)


def is_request(record: NetworkService) -> bool:
    """Whether the record claims to be an external-host request (parse it to trust it)."""
    return record.name.startswith(REQUEST_PREFIX)


def is_status(record: NetworkService) -> bool:
    """Whether the record claims to be an external-host status (parse it to trust it)."""
    return record.name.startswith(STATUS_PREFIX)


def request_record(host: ExternalHost) -> NetworkService:
    """The registry record of a request (every field validated)."""
    labels = {
        f"{LABEL}kind": "request",
        f"{LABEL}service": check_service(host.service),
        f"{LABEL}public-key": _key_label(parse_key(host.public_key)),
    }
    if host.serve:
        labels[f"{LABEL}mode"] = "serve"
        labels[f"{LABEL}address"] = _addr_label(check_host_address(host.address))
    elif host.address:
        raise InvalidArgument("address", "only a served host (--serve) has an address")
    return _record(request_name(host.name), labels)


def parse_request(record: NetworkService) -> ExternalHost:
    """A request record back into an :class:`ExternalHost`, validated."""
    labels = _labels(record, "request")
    name = check_name(record.name.removeprefix(REQUEST_PREFIX), "name")
    mode = labels.get(f"{LABEL}mode", "reach")
    if mode not in ("reach", "serve"):
        raise InvalidArgument("mode", "must be reach or serve")
    serve = mode == "serve"
    return ExternalHost(
        name,
        check_service(labels.get(f"{LABEL}service", ""), "service"),
        _key_unlabel(labels.get(f"{LABEL}public-key", ""), "public_key"),
        serve,
        check_host_address(_addr_unlabel(labels.get(f"{LABEL}address", "")), "address")
        if serve else "",
    )


def status_record(status: ExternalStatus) -> NetworkService:
    """The registry record of a status (every field validated)."""
    if status.state not in STATES:
        raise InvalidArgument("state", f"must be one of {STATES}")
    labels = {f"{LABEL}kind": "status", f"{LABEL}state": status.state}
    if status.error:
        if not _CODE.match(status.error):
            raise InvalidArgument("error", "must be an error code such as NotFound")
        labels[f"{LABEL}error"] = status.error
    if status.endpoint is not None:
        labels[f"{LABEL}endpoint-ip"] = _addr_label(_check_ip(status.endpoint[0], "endpoint"))
        labels[f"{LABEL}endpoint-port"] = str(int(status.endpoint[1]))
    if status.public_key:
        labels[f"{LABEL}public-key"] = _key_label(parse_key(status.public_key))
    if status.mtu:
        labels[f"{LABEL}mtu"] = str(int(status.mtu))
    _put_list(labels, "address", [_check_cidr(a, "addresses") for a in status.addresses])
    _put_list(labels, "allowed", [_check_cidr(a, "allowed_ips") for a in status.allowed_ips])
    _put_list(labels, "dns", [_check_ip(a, "dns") for a in status.dns])
    return _record(status_name(status.name), labels)


def _int(labels: Mapping[str, str], field: str, low: int, high: int) -> int:
    text = labels.get(f"{LABEL}{field}", "0")
    if not text.isdigit() or not (int(text) == 0 or low <= int(text) <= high):
        raise InvalidArgument(field, f"must be a number in {low}..{high}")
    return int(text)


def parse_status(record: NetworkService) -> ExternalStatus:
    """A status record back into an :class:`ExternalStatus`, validated."""
    labels = _labels(record, "status")
    name = check_name(record.name.removeprefix(STATUS_PREFIX), "name")
    state = labels.get(f"{LABEL}state", "")
    if state not in STATES:
        raise InvalidArgument("state", f"must be one of {STATES}")
    error = labels.get(f"{LABEL}error", "")
    endpoint = None
    if f"{LABEL}endpoint-ip" in labels:
        ip = _check_ip(_addr_unlabel(labels[f"{LABEL}endpoint-ip"]), "endpoint")
        port = _int(labels, "endpoint-port", 1, 65535)
        if not port:
            raise InvalidArgument("endpoint-port", "must be a number in 1..65535")
        endpoint = (ip, port)
    key = labels.get(f"{LABEL}public-key", "")
    return ExternalStatus(
        name, state, endpoint,
        _key_unlabel(key, "public_key") if key else "",
        tuple(_check_cidr(_addr_unlabel(a), "addresses") for a in _list(labels, "address")),
        tuple(_check_cidr(_addr_unlabel(a), "allowed_ips") for a in _list(labels, "allowed")),
        _int(labels, "mtu", 576, 65535),
        tuple(_check_ip(_addr_unlabel(a), "dns") for a in _list(labels, "dns")),
        error if _CODE.match(error) else ("" if not error else "invalid"),
    )


# -- the host's configuration -------------------------------------------------------------------

KEEPALIVE = 25  # seconds: below the shortest common NAT idle timeout (GCP: 30 s)


def render_config(status: ExternalStatus, *, private_key: str = "", key_file: str = "") -> str:
    """The host's wg-quick file. ``private_key`` (only when the fabric made the key) goes into
    it; otherwise ``PostUp`` loads the key the host made from ``key_file`` and then turns on
    keepalives, so that the host's first handshake already carries its identity."""
    if status.state != "ready" or status.endpoint is None:
        raise InvalidArgument("status", f"external host {status.name} is not ready")
    host, port = status.endpoint
    endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = ["[Interface]", f"# external host {status.name}, written by nsmctl external config"]
    lines += [f"Address = {', '.join(status.addresses)}"]
    if status.mtu:
        lines.append(f"MTU = {status.mtu}")
    if status.dns:
        lines.append(f"DNS = {', '.join(status.dns)}")
    peer = [f"PublicKey = {status.public_key}", f"Endpoint = {endpoint}",
            f"AllowedIPs = {', '.join(status.allowed_ips)}"]
    if private_key:
        lines.append(f"PrivateKey = {private_key}")
        peer.append(f"PersistentKeepalive = {KEEPALIVE}")
    else:
        # Keepalives start only once PostUp has loaded the key: the one WireGuard sends when the
        # link comes up would carry no identity, the fabric refuses it, and the next try comes
        # 5 s later (a server that only answers stays unreachable until then).
        lines += ["# PostUp loads the host's key, then starts keepalives (every 25 s)",
                  f"PostUp = wg set %i private-key {key_file or '/etc/wireguard/private.key'} "
                  f"peer {status.public_key} persistent-keepalive {KEEPALIVE}"]
    return "\n".join([*lines, "", "[Peer]", *peer]) + "\n"
