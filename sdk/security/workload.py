"""The node agent's workload protocol: how a local workload gets its SVID, and a source for it.

Wire format (``python -m agent`` serves it on a unix socket; :envvar:`SPIFFE_ENDPOINT_SOCKET`
names the socket as ``unix:///path`` or a plain path): each message is a 4-byte big-endian length
and that many bytes of UTF-8 JSON (at most :data:`MAX_MESSAGE` bytes). The client sends one
request, ``{"op": "x509svid"}``, and reads one answer, then the agent closes the connection:

* ``{"spiffe_id", "svid_pem" (chain, leaf first), "key_pem", "bundle_pem",
  "federated_bundles": {"<trust-domain>": "<PEM roots>", ...}, "expires_at",
  "hints": {"nsmgr_id": ...}}`` — the caller's SVID (a fresh key each time), its trust domain's
  bundle and the foreign trust domains' bundles it federates with (optional; each checked as
  :func:`sdk.security.federation.foreign_bundle` does), or
* ``{"error": "...", "code": "PermissionDenied"}`` — the caller is not a workload the agent knows.

The request names **nothing** about who the caller is: the agent decides from the kernel's peer
credentials of the connection (``SO_PEERCRED``), never from anything the caller says.

Contract of :class:`AgentSvidSource` (an :class:`sdk.security.source.SvidSource`): fetches at
construction (raising :class:`sdk.errors.Unavailable` or :class:`PermissionDenied` with the reason),
keeps the SVID and its key **in memory only**, and on ``current()`` fetches a fresh one once
``renew_fraction`` of the current one's lifetime has passed; a failed renewal keeps the current
SVID (logged) until it expires, after which ``current()`` raises :class:`Unauthenticated`.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from sdk.errors import FabricError, PermissionDenied, Unauthenticated, Unavailable
from sdk.security.federation import foreign_bundle
from sdk.security.source import Clock, Material, RenewingSource
from sdk.security.svid import Svid, TrustBundle, load_certificates, load_private_key

ENV_SOCKET = "SPIFFE_ENDPOINT_SOCKET"
MAX_MESSAGE = 64 * 1024
OP_X509 = "x509svid"
_HEADER = struct.Struct(">I")
_log = structlog.get_logger("sdk.security")


def socket_path(address: str) -> str:
    """The file of an agent address: ``unix:///path`` or ``/path``."""
    path = address.removeprefix("unix://")
    if not path.startswith("/"):
        raise Unavailable(f"agent socket {address!r}: give unix:///absolute/path or /absolute/path")
    return path


def encode(message: dict[str, Any]) -> bytes:
    """One framed message."""
    data = json.dumps(message).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    return _HEADER.pack(len(data)) + data


def decode_length(header: bytes) -> int:
    """The payload length of a frame header; ValueError when too long."""
    (length,) = _HEADER.unpack(header)
    if length > MAX_MESSAGE:
        raise ValueError(f"message of {length} bytes exceeds {MAX_MESSAGE}")
    return int(length)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the agent closed the connection early")
        data += chunk
    return data


@dataclass(frozen=True)
class Fetched:
    """What the agent answered: the SVID, the bundle, and hints (e.g. ``nsmgr_id``)."""

    svid: Svid
    bundle: TrustBundle
    hints: dict[str, str] = field(default_factory=dict)
    foreign: tuple[TrustBundle, ...] = ()


def _parse(answer: dict[str, Any], address: str) -> Fetched:
    if "error" in answer:
        raise PermissionDenied(f"the node agent at {address} refused: {answer['error']}")
    try:
        chain = load_certificates(answer["svid_pem"].encode(), "svid_pem")
        key = load_private_key(answer["key_pem"].encode(), "key_pem")
        svid = Svid(tuple(chain), key)
        local = svid.spiffe_id.trust_domain
        bundle = TrustBundle.from_pem(answer["bundle_pem"].encode(), local)
        hints = {str(k): str(v) for k, v in dict(answer.get("hints") or {}).items()}
        foreign = tuple(
            foreign_bundle(str(pem).encode(), local, str(td), f"federated_bundles[{td!r}]",
                           check_expiry=False)
            for td, pem in dict(answer.get("federated_bundles") or {}).items()
        )
    except (KeyError, TypeError, AttributeError, ValueError, FabricError) as exc:
        raise Unavailable(f"the node agent at {address} sent a malformed answer: {exc}") from None
    return Fetched(svid, bundle, hints, foreign)


def fetch(address: str, timeout: float = 5.0) -> Fetched:
    """Ask the agent at ``address`` for this process's SVID (blocking, at most ``timeout`` s)."""
    path = socket_path(address)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(encode({"op": OP_X509}))
            length = decode_length(_recv_exactly(sock, _HEADER.size))
            answer = json.loads(_recv_exactly(sock, length))
    except (OSError, ValueError) as exc:
        raise Unavailable(f"cannot get an SVID from the node agent at {address}: {exc}") from None
    if not isinstance(answer, dict):
        raise Unavailable(f"the node agent at {address} sent a malformed answer")
    return _parse(answer, address)


class AgentSvidSource(RenewingSource):
    """See the module docstring."""

    def __init__(self, address: str, renew_fraction: float = 0.5, timeout: float = 5.0,
                 clock: Clock = time.time) -> None:
        super().__init__(clock, renew_fraction)
        self.address = address
        self.timeout = timeout
        self.hints: dict[str, str] = {}
        self.renew()

    def __repr__(self) -> str:
        return f"<AgentSvidSource {self.address}>"

    def renew(self) -> Material:
        """Fetch a fresh SVID now (raises when the agent cannot give one)."""
        with self._lock:
            now = self._clock()
            fetched = fetch(self.address, self.timeout)
            self.hints = fetched.hints
            return self._renewed(fetched.svid, fetched.bundle, now, fetched.foreign)

    def current(self) -> Material:
        with self._lock:
            now = self._clock()
            if now >= self._renew_at:
                try:
                    return self.renew()
                except FabricError as exc:
                    _log.warning("svid renewal from the node agent failed, keeping the current "
                                 "one", agent=self.address, error=str(exc))
                    self._renew_at = now + 1.0  # retry soon, not on every call
            assert self._material is not None
            if self._material.svid.not_after <= now:
                raise Unauthenticated(
                    f"{self._material.svid} expired and the node agent at {self.address} gave no "
                    "newer one: is the agent running?"
                )
            return self._material
