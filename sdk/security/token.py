"""Path tokens: compact JWS (ES256) signed with a hop's SVID key.

A token says "``sub`` hands connection segment ``cid`` to ``aud``, until ``exp``", chained to the
token before it by ``prev`` (base64url SHA-256 of the previous segment's token, empty for the
first hop). The protected header carries the signer's certificate chain (``x5c``, leaf first), so
any hop can check the signer against its own trust bundle without a key directory.

Contract:
- :func:`sign` makes a token whose expiry is ``min(now + lifetime, SVID expiry)``.
- :func:`verify` accepts only ``alg: ES256`` compact tokens of at most :data:`MAX_TOKEN` bytes
  with a well-formed header and claims; the ``x5c`` chain must verify against the bundle at ``now``
  and its SPIFFE ID must equal ``sub``; the signature must verify with the leaf's key; ``now`` must
  lie in ``[iat - skew, exp)`` (unless ``allow_expired``). Every failure raises
  :class:`sdk.errors.Unauthenticated` (cannot tell who signed, or the proof is stale) or
  :class:`sdk.errors.PermissionDenied` (a valid token used where it does not belong: other
  audience, other connection segment, other previous token) with the reason. Token text never
  appears in messages. A signer chain that verified is remembered (per bundle object, while every
  certificate involved is valid; at most 256), so the next token of the same SVID costs one
  signature check; every token's signature and claims are always checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding

from sdk.errors import FabricError, PermissionDenied, Unauthenticated
from sdk.security.svid import Svid, TrustBundle

ALG = "ES256"
MAX_TOKEN = 16 * 1024
MAX_CHAIN = 4
DEFAULT_LIFETIME = 600.0
DEFAULT_SKEW = 30.0
_CURVE_BYTES = 32
_DER = Encoding.DER
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str, what: str) -> bytes:
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise Unauthenticated(f"path token: {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Unauthenticated(f"path token: {what} is not base64url") from None


def token_hash(token: str) -> str:
    """The chaining value of a token: base64url SHA-256 of its text ("" for no token)."""
    return _b64url(hashlib.sha256(token.encode()).digest()) if token else ""


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    subject: str
    audience: str
    segment_id: str
    previous: str
    issued_at: float
    expires_at: float


def path_identities(tokens: Iterable[str]) -> set[str]:
    """The subjects and audiences named by ``tokens`` — read, NOT verified: only for tokens this
    process verified when they arrived (e.g. to scope who may watch a connection)."""
    found: set[str] = set()
    for text in tokens:
        parts = text.split(".")
        if len(parts) != 3 or len(text) > MAX_TOKEN:
            continue
        try:
            claims = _json_object(parts[1], "claims")
        except Unauthenticated:
            continue
        found.update(v for k in ("sub", "aud") if isinstance(v := claims.get(k), str) and v)
    return found


def sign(
    svid: Svid,
    audience: str,
    segment_id: str,
    previous_token: str = "",
    lifetime: float = DEFAULT_LIFETIME,
    now: float | None = None,
) -> tuple[str, float]:
    """A token for ``segment_id`` from this SVID's owner to ``audience``; returns it and its
    expiry (Unix time)."""
    issued = time.time() if now is None else now
    expires = min(issued + lifetime, svid.not_after)
    header = {
        "alg": ALG,
        "typ": "JWT",
        "x5c": [base64.b64encode(c.public_bytes(_DER)).decode("ascii") for c in svid.chain],
    }
    claims = {
        "sub": str(svid.spiffe_id),
        "aud": audience,
        "cid": segment_id,
        "prev": token_hash(previous_token),
        "iat": int(issued),
        "exp": int(expires),
    }
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    der = svid.key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(_CURVE_BYTES, "big") + s.to_bytes(_CURVE_BYTES, "big")
    return f"{signing_input}.{_b64url(signature)}", float(int(expires))


def _json_object(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_unb64url(part, what))
    except (ValueError, UnicodeDecodeError):
        raise Unauthenticated(f"path token: {what} is not JSON") from None
    if not isinstance(value, dict):
        raise Unauthenticated(f"path token: {what} is not a JSON object")
    return value


def _claims(payload: dict[str, Any]) -> Claims:
    strings = {k: payload.get(k) for k in ("sub", "aud", "cid", "prev")}
    numbers = {k: payload.get(k) for k in ("iat", "exp")}
    for key, value in strings.items():
        if not isinstance(value, str):
            raise Unauthenticated(f"path token: claim {key!r} must be a string")
    for key, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Unauthenticated(f"path token: claim {key!r} must be a number")
    return Claims(
        subject=str(strings["sub"]), audience=str(strings["aud"]), segment_id=str(strings["cid"]),
        previous=str(strings["prev"]), issued_at=float(numbers["iat"]),  # type: ignore[arg-type]
        expires_at=float(numbers["exp"]),  # type: ignore[arg-type]
    )


def _signer_chain(header: dict[str, Any]) -> list[x509.Certificate]:
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not 0 < len(x5c) <= MAX_CHAIN:
        raise Unauthenticated(
            f"path token: header x5c must list the signer's certificates (1 to {MAX_CHAIN})"
        )
    chain = []
    for item in x5c:
        if not isinstance(item, str):
            raise Unauthenticated("path token: x5c entries must be base64 DER certificates")
        try:
            chain.append(x509.load_der_x509_certificate(base64.b64decode(item, validate=True)))
        except (ValueError, binascii.Error):
            raise Unauthenticated("path token: x5c holds a malformed certificate") from None
    return chain


@dataclass(frozen=True)
class _Signer:
    """A signer certificate chain already verified against ``bundle``, while it stays valid."""

    bundle: TrustBundle
    spiffe_id: str
    key: ec.EllipticCurvePublicKey
    valid_from: float
    valid_until: float


# The same few SVIDs sign every token a process sees: their chains are verified once per bundle
# and validity window, keyed by the token's header text (which holds the x5c chain).
_SIGNERS: OrderedDict[tuple[int, str], _Signer] = OrderedDict()
_SIGNERS_KEPT = 256


def _signer(
    header_text: str, header: dict[str, Any], bundle: TrustBundle, claims: Claims, at: float
) -> tuple[str, ec.EllipticCurvePublicKey]:
    """The SPIFFE ID and public key of the token's signer, its chain verified at ``at``."""
    key = (id(bundle), header_text)
    known = _SIGNERS.get(key)
    if known is not None and known.bundle is bundle and known.valid_from <= at < known.valid_until:
        _SIGNERS.move_to_end(key)
        return known.spiffe_id, known.key
    chain = _signer_chain(header)
    try:
        signer = bundle.verify(chain, now=at)
    except FabricError as exc:
        raise Unauthenticated(f"path token of {claims.subject!r}: signer rejected: {exc}") from None
    public = chain[0].public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise Unauthenticated("path token: the signer's key is not an EC key")
    certificates = [*chain, *bundle.roots]
    _SIGNERS[key] = _Signer(
        bundle, str(signer), public,
        max(c.not_valid_before_utc.timestamp() for c in certificates),
        min(c.not_valid_after_utc.timestamp() for c in certificates),
    )
    if len(_SIGNERS) > _SIGNERS_KEPT:
        _SIGNERS.popitem(last=False)
    return str(signer), public


def verify(
    token: str,
    bundle: TrustBundle,
    now: float | None = None,
    *,
    audience: str | None = None,
    segment_id: str | None = None,
    previous_token: str | None = None,
    allow_expired: bool = False,
    skew: float = DEFAULT_SKEW,
) -> Claims:
    """Verify ``token``; see the module docstring. The keyword checks run when given."""
    at = time.time() if now is None else now
    if not token:
        raise Unauthenticated("path token: missing (the previous hop did not sign its segment)")
    if len(token) > MAX_TOKEN:
        raise Unauthenticated(f"path token: longer than {MAX_TOKEN} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise Unauthenticated("path token: not a compact JWS (header.claims.signature)")
    header = _json_object(parts[0], "header")
    if header.get("alg") != ALG:
        raise Unauthenticated(f"path token: algorithm must be {ALG}")
    payload = _json_object(parts[1], "claims")
    claims = _claims(payload)
    signer, public = _signer(parts[0], header, bundle, claims,
                             claims.issued_at if allow_expired else at)
    if signer != claims.subject:
        raise Unauthenticated(
            f"path token: signed by {signer} but claims to be from {claims.subject!r}"
        )
    signature = _unb64url(parts[2], "signature")
    if len(signature) != 2 * _CURVE_BYTES:
        raise Unauthenticated("path token: ES256 signatures are 64 bytes")
    der = encode_dss_signature(
        int.from_bytes(signature[:_CURVE_BYTES], "big"),
        int.from_bytes(signature[_CURVE_BYTES:], "big"),
    )
    try:
        public.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Unauthenticated(
            f"path token of {claims.subject}: signature does not verify (forged or altered)"
        ) from None
    if not allow_expired:
        if at >= claims.expires_at:
            raise Unauthenticated(
                f"path token of {claims.subject} expired {at - claims.expires_at:.0f} s ago: "
                "the connection must be refreshed"
            )
        if at < claims.issued_at - skew:
            raise Unauthenticated(f"path token of {claims.subject} is issued in the future")
    if audience is not None and claims.audience != audience:
        raise PermissionDenied(
            f"path token of {claims.subject} is for {claims.audience!r}, not {audience}"
        )
    if segment_id is not None and claims.segment_id != segment_id:
        raise PermissionDenied(
            f"path token of {claims.subject} was issued for connection segment "
            f"{claims.segment_id!r}, not {segment_id!r} (replayed?)"
        )
    if previous_token is not None and claims.previous != token_hash(previous_token):
        raise PermissionDenied(
            f"path token of {claims.subject} does not chain to the previous segment's token"
        )
    return claims
