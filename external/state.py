"""The fabric side's lasting state per external host: its WireGuard private key and UDP port.

Contract: :meth:`HostState.load_or_create` returns the same key and port for a host across
restarts of the process (so the host's exported configuration stays valid), picking the lowest
port of the range that no other host holds; files are ``<state_dir>/<name>.json``, mode 0600,
written atomically. :meth:`forget` deletes the file (after ``nsmctl external remove``). Keys
never appear in logs or errors (:class:`WgKey` redacts itself).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from sdk.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from sdk.external import check_name, parse_key


class WgKey(str):
    """A base64 private key that shows itself only through :meth:`reveal`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "WgKey('<redacted>')"

    def __str__(self) -> str:
        return "<redacted>"

    def reveal(self) -> str:
        return str.__str__(self)

    def public_key(self) -> str:
        private = X25519PrivateKey.from_private_bytes(base64.b64decode(self.reveal()))
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return base64.b64encode(raw).decode("ascii")

    @classmethod
    def generate(cls) -> WgKey:
        raw = X25519PrivateKey.generate().private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls(base64.b64encode(raw).decode("ascii"))


def parse_ports(text: str) -> range:
    """``FIRST-LAST`` (inclusive) as a range of UDP ports."""
    first, _, last = text.partition("-")
    if not (first.isdigit() and last.isdigit() and 1 <= int(first) <= int(last) <= 65535):
        raise InvalidArgument("ports", f"{text!r}: give FIRST-LAST, e.g. 51900-51999")
    return range(int(first), int(last) + 1)


@dataclass(frozen=True)
class HostKeys:
    """One host's fabric-side key and port."""

    private_key: WgKey
    port: int


class HostState:
    """See the module docstring."""

    def __init__(self, directory: Path, ports: range) -> None:
        self.directory = directory
        self.ports = ports

    def _file(self, name: str) -> Path:
        return self.directory / f"{check_name(name)}.json"

    def _read(self, path: Path) -> HostKeys:
        try:
            doc = json.loads(path.read_text())
            key = WgKey(parse_key(doc["private_key"], "private_key"))
            port = int(doc["port"])
        except (OSError, ValueError, KeyError, TypeError, InvalidArgument) as exc:
            raise FailedPrecondition(
                f"state file {path} is unreadable ({type(exc).__name__}): remove it and the "
                "host's request, then add the host again") from None
        return HostKeys(key, port)

    def _used_ports(self) -> set[int]:
        used = set()
        for path in self.directory.glob("*.json"):
            try:
                used.add(self._read(path).port)
            except FailedPrecondition:
                continue
        return used

    def load_or_create(self, name: str) -> HostKeys:
        """The host's key and port, made and stored on first use."""
        path = self._file(name)
        if path.exists():
            return self._read(path)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        free = [port for port in self.ports if port not in self._used_ports()]
        if not free:
            raise ResourceExhausted(
                f"ports: every UDP port of {self.ports.start}-{self.ports.stop - 1} is taken by "
                "an external host: widen --ports or remove hosts")
        keys = HostKeys(WgKey.generate(), free[0])
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"private_key": keys.private_key.reveal(), "port": keys.port}, out)
        tmp.replace(path)
        return keys

    def names(self) -> set[str]:
        """The hosts that have state."""
        found = set()
        for path in self.directory.glob("*.json"):
            try:
                found.add(check_name(path.stem))
            except InvalidArgument:
                continue  # not a file of ours
        return found

    def forget(self, name: str) -> None:
        """Delete the host's state (idempotent)."""
        self._file(name).unlink(missing_ok=True)
