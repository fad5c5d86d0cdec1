"""WireGuard keys: X25519 key pairs, base64/hex conversion and validation.

Contract:
- Keys travel as standard base64 of 32 bytes (what ``wg`` prints); the userspace UAPI wants hex.
- Every parser raises :class:`sdk.errors.InvalidArgument` naming the field; the message never
  contains the offending text, so a mistyped private key cannot leak through an error.
- A private key is held as :class:`PrivateKey`: a ``str`` (so it fits ``private_key: str``
  signatures) whose ``repr``, ``str`` and ``format`` are redacted. The raw base64 is only
  reachable through :meth:`PrivateKey.reveal`, called where the key is handed to the data plane.
  ``json.dumps`` still sees the raw characters: never put a key into a log event at all.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from sdk.errors import InvalidArgument

KEY_LEN = 32
REDACTED = "<redacted private key>"


class PrivateKey(str):
    """A base64 WireGuard private key that refuses to show itself in reprs, logs or messages."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"PrivateKey({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return format(REDACTED, spec)

    def reveal(self) -> str:
        """The raw base64 text, for handing to the data plane only."""
        return str.__str__(self)

    def raw(self) -> bytes:
        """The 32 raw key bytes."""
        return base64.b64decode(self.reveal())

    def public_key(self) -> str:
        """The base64 public key that belongs to this private key."""
        priv = X25519PrivateKey.from_private_bytes(self.raw())
        return _b64(priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _decode_b64_key(value: object, field: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidArgument(field, "must be a base64 string of 32 bytes")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidArgument(
            field, "is not valid base64: use the 44-character form that `wg genkey` prints"
        ) from None
    if len(raw) != KEY_LEN:
        raise InvalidArgument(field, f"must decode to {KEY_LEN} bytes (got {len(raw)})")
    return raw


def parse_public_key(value: object, field: str = "public_key") -> str:
    """Validate a base64 public key and return it in canonical base64."""
    return _b64(_decode_b64_key(value, field))


def parse_private_key(value: object, field: str = "private_key") -> PrivateKey:
    """Validate a base64 private key and wrap it as a :class:`PrivateKey`."""
    if isinstance(value, PrivateKey):
        value = value.reveal()
    return PrivateKey(_b64(_decode_b64_key(value, field)))


def generate_private_key() -> PrivateKey:
    """A fresh X25519 private key."""
    raw = X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return PrivateKey(_b64(raw))


def generate_keypair() -> tuple[str, str]:
    """A fresh ``(private_b64, public_b64)`` pair; the private half is a :class:`PrivateKey`."""
    private = generate_private_key()
    return private, private.public_key()


def b64_to_hex(value: str, field: str = "key") -> str:
    """Base64 key to the lowercase hex form the UAPI uses (validated)."""
    if isinstance(value, PrivateKey):
        value = value.reveal()
    return _decode_b64_key(value, field).hex()


def hex_to_b64(value: str, field: str = "key") -> str:
    """Hex key (as the UAPI prints it) to base64 (validated)."""
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise InvalidArgument(field, "is not valid hex") from None
    if len(raw) != KEY_LEN:
        raise InvalidArgument(field, f"must be {KEY_LEN} bytes of hex (got {len(raw)})")
    return _b64(raw)
