"""Path tokens: compact JWS (ES256) signed with a hop's SVID key.

A token says "``sub`` hands connection segment ``cid`` to ``aud``, until ``exp``", chained to the
token before it by ``prev`` (base64url SHA-256 of the previous segment's token, empty for the
first hop). The protected header carries the signer's certificate chain (``x5c``, leaf first), so
any hop can check the signer against its own trust bundle without a key directory.

Contract:
- :func:`sign` makes a token whose expiry is ``min(now + lifetime, SVID expiry)``, with a low-S
  signature. Optional claims bind the token to what its signer decided: ``req`` (a hash of the
  request's network service and labels), ``mech`` (a hash of the mechanism preferences the signer
  sent), ``psub`` (the subject of the segment before, for closes: see
  :mod:`sdk.networkservice.token`) and ``nxt`` (a hash of the route a node manager hands its
  forwarder: :mod:`sdk.networkservice.route`); this module carries them, the elements compute and
  compare.
- :func:`verify` accepts only ``alg: ES256`` compact tokens of at most :data:`MAX_TOKEN` bytes in
  canonical base64url (no padding, no stray bits: one token text per signed content), whose header
  and claims are JSON objects of at most :data:`MAX_NESTING` brackets with times that are finite
  numbers in ``[0, MAX_TIME]`` and no ``NaN``/``Infinity``; the ``x5c`` chain must verify against
  the bundle at ``now`` and its SPIFFE ID must equal ``sub`` (given a federated
  :class:`sdk.security.federation.BundleSet`, against the bundle of the trust domain that ID names,
  and a trust domain the set does not hold is refused naming it); ``exp`` must not outlive the
  signer's certificate; the signature must verify with the leaf's key and be low-S (``s <= n/2``, so
  ``(r, n - s)`` is no second valid text); ``now`` must lie in ``[iat - skew, exp)``. With
  ``allow_expired`` (closes) a token may be expired for at most :data:`CLOSE_GRACE` seconds and the
  signer's chain is checked at ``max(iat, now - CLOSE_GRACE)`` — never at an ``iat`` older than
  that, so back-dating a token signed after the SVID expired does not help. Every failure raises
  :class:`sdk.errors.Unauthenticated` (cannot tell who signed, or the proof is stale) or
  :class:`sdk.errors.PermissionDenied` (a valid token used where it does not belong: other audience,
  other connection segment, other previous token) with the reason. Token text never appears in
  messages. A signer chain that verified is remembered (per bundle object, while every certificate
  involved is valid; at most 256), so the next token of the same SVID costs one signature check;
  every token's signature and claims are checked when it is first seen. A token that verified is
  remembered too (by the SHA-256 of its text, per bundle object, at most :data:`_VERIFIED_KEPT`,
  so the memory holds no token texts; the oldest
  forgotten first; dropped once past its close grace): the same token seen again in this process
  (the next hop of the same request, its close) costs no signature check or parse, but its
  signer's validity window, its times (expiry, grace, skew) and every binding asked for
  (audience, segment, previous token) are checked again at every call.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
import time
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
from sdk.lru import Lru
from sdk.security.federation import BundleSet
from sdk.security.svid import Svid, TrustBundle

#: What verifies a signer: one trust domain's bundle, or a federated set (each signer then only
#: against the bundle of the trust domain its SPIFFE ID names).
Trust = TrustBundle | BundleSet

ALG = "ES256"
MAX_TOKEN = 16 * 1024
MAX_CHAIN = 4
DEFAULT_LIFETIME = 600.0
DEFAULT_SKEW = 30.0
#: How long after ``exp`` a token still closes its connection (timeouts close with tokens that
#: just expired; a hop's own timer has closed the connection by then anyway).
CLOSE_GRACE = 300.0
#: Most ``{``/``[`` characters in a header or claims text (ours have 2 and 1): bounds the nesting
#: before the JSON parser sees it.
MAX_NESTING = 16
#: Latest time a token may name (the end of year 9999, the last one datetime can express).
MAX_TIME = 253402300799
#: Order of the P-256 group: signatures must have ``0 < r, s < n`` and ``s <= n // 2``.
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_HALF_N = _N // 2
_CURVE_BYTES = 32
_DER = Encoding.DER
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str, what: str) -> bytes:
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise Unauthenticated(f"path token: {what} is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Unauthenticated(f"path token: {what} is not base64url") from None
    if _b64url(data) != text:  # unused low bits set in the last character: another text
        raise Unauthenticated(
            f"path token: {what} is not in canonical base64url (unpadded, unused bits zero)"
        )
    return data


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
    #: ``req``: hash of the request's network service and labels ("" when not bound).
    request: str = ""
    #: ``mech``: hash of the mechanism preferences the signer sent ("" when not bound).
    mechanisms: str = ""
    #: ``psub``: the subject of the segment before, as the signer saw it ("" for none).
    previous_subject: str = ""
    #: ``nxt``: hash of the route the signer handed its audience to follow ("" when none).
    route: str = ""


def path_identities(tokens: Iterable[str]) -> set[str]:
    """The subjects and audiences named by ``tokens`` — read, NOT verified: only for tokens this
    process verified when they arrived (e.g. to scope who may watch a connection)."""
    found: set[str] = set()
    for text in tokens:
        found.update(_named_identities(text))
    return found


# Keyed by the SHA-256 of the token text: the texts (~1.6 KB each) are not kept.
_NAMED_KEPT = 512
_NAMED: Lru[bytes, tuple[str, ...]] = Lru(_NAMED_KEPT)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _named_identities(text: str) -> tuple[str, ...]:
    """``sub`` and ``aud`` of one token, unverified (asked for every monitor event: a token is
    parsed once, the last :data:`_NAMED_KEPT` remembered)."""
    key = _digest(text)
    known = _NAMED.get(key)
    if known is None:
        known = _read_identities(text)
        _NAMED.put(key, known)
    else:
        _NAMED.touch(key)
    return known


def _read_identities(text: str) -> tuple[str, ...]:
    parts = text.split(".")
    if len(parts) != 3 or len(text) > MAX_TOKEN:
        return ()
    try:
        claims = _json_object(parts[1], "claims")
    except Unauthenticated:
        return ()
    return tuple(v for k in ("sub", "aud") if isinstance(v := claims.get(k), str) and v)


def unverified_subject(text: str) -> str:
    """The ``sub`` claim of ``text`` — read, NOT verified ("" when there is none): only for a
    token this process verified or signed itself."""
    parts = text.split(".")
    if len(parts) != 3 or len(text) > MAX_TOKEN:
        return ""
    try:
        subject = _json_object(parts[1], "claims").get("sub")
    except Unauthenticated:
        return ""
    return subject if isinstance(subject, str) else ""


def sign(
    svid: Svid,
    audience: str,
    segment_id: str,
    previous_token: str = "",
    lifetime: float = DEFAULT_LIFETIME,
    now: float | None = None,
    *,
    request: str = "",
    mechanisms: str = "",
    previous_subject: str = "",
    route: str = "",
) -> tuple[str, float]:
    """A token for ``segment_id`` from this SVID's owner to ``audience``; returns it and its
    expiry (Unix time). ``request``, ``mechanisms``, ``previous_subject`` and ``route`` become
    the ``req``, ``mech``, ``psub`` and ``nxt`` claims when given."""
    issued = time.time() if now is None else now
    expires = min(issued + lifetime, svid.not_after)
    claims = {
        "sub": str(svid.spiffe_id),
        "aud": audience,
        "cid": segment_id,
        "prev": token_hash(previous_token),
        "iat": int(issued),
        "exp": int(expires),
    }
    for name, value in (("req", request), ("mech", mechanisms), ("psub", previous_subject),
                        ("nxt", route)):
        if value:
            claims[name] = value
    signing_input = (
        _header_part(svid) + "." + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    der = svid.key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    if s > _HALF_N:  # (r, s) and (r, n - s) both verify: only the low one is accepted
        s = _N - s
    signature = r.to_bytes(_CURVE_BYTES, "big") + s.to_bytes(_CURVE_BYTES, "big")
    return f"{signing_input}.{_b64url(signature)}", float(int(expires))


@functools.lru_cache(maxsize=8)
def _header_part(svid: Svid) -> str:
    """The encoded protected header of every token ``svid`` signs: the same for all of them, so
    made once (a few SVIDs kept: the current one and those it replaced)."""
    header = {
        "alg": ALG,
        "typ": "JWT",
        "x5c": [base64.b64encode(c.public_bytes(_DER)).decode("ascii") for c in svid.chain],
    }
    return _b64url(json.dumps(header, separators=(",", ":")).encode())


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_object(part: str, what: str) -> dict[str, Any]:
    raw = _unb64url(part, what)
    if raw.count(b"{") + raw.count(b"[") > MAX_NESTING:
        raise Unauthenticated(
            f"path token: {what} holds more than {MAX_NESTING} objects and arrays (too deep)"
        )
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError):  # also: integers beyond Python's digit limit
        raise Unauthenticated(f"path token: {what} is not JSON") from None
    if not isinstance(value, dict):
        raise Unauthenticated(f"path token: {what} is not a JSON object")
    return value


def _string(payload: dict[str, Any], key: str, required: bool = True) -> str:
    value = payload.get(key, None if required else "")
    if not isinstance(value, str):
        raise Unauthenticated(f"path token: claim {key!r} must be a string")
    return value


def _time(payload: dict[str, Any], key: str) -> float:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthenticated(f"path token: claim {key!r} must be a number (Unix time)")
    # Comparisons first: int() of 10**400 is fine, float() of it raises; NaN fails both.
    if not 0 <= value <= MAX_TIME:
        raise Unauthenticated(
            f"path token: claim {key!r} must be a Unix time between 0 and {MAX_TIME}"
        )
    return float(value)


def _claims(payload: dict[str, Any]) -> Claims:
    return Claims(
        subject=_string(payload, "sub"), audience=_string(payload, "aud"),
        segment_id=_string(payload, "cid"), previous=_string(payload, "prev"),
        issued_at=_time(payload, "iat"), expires_at=_time(payload, "exp"),
        request=_string(payload, "req", False), mechanisms=_string(payload, "mech", False),
        previous_subject=_string(payload, "psub", False), route=_string(payload, "nxt", False),
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

    bundle: Trust
    spiffe_id: str
    key: ec.EllipticCurvePublicKey
    valid_from: float
    valid_until: float
    leaf_until: float


# The same few SVIDs sign every token a process sees: their chains are verified once per bundle
# and validity window, keyed by the token's header text (which holds the x5c chain).
_SIGNERS_KEPT = 256
_SIGNERS: Lru[tuple[int, str], _Signer] = Lru(_SIGNERS_KEPT)


def _header(text: str) -> dict[str, Any]:
    header = _json_object(text, "header")
    if header.get("alg") != ALG:
        raise Unauthenticated(f"path token: algorithm must be {ALG}")
    return header


def _signer(
    header_text: str, header: dict[str, Any] | None, bundle: Trust, claims: Claims,
    at: float,
) -> _Signer:
    """The token's signer (SPIFFE ID, public key, leaf expiry), its chain verified at ``at``;
    ``header`` is the parsed ``header_text`` (None: parsed here unless remembered)."""
    key = (id(bundle), header_text)
    known = _SIGNERS.get(key)
    if known is not None and known.bundle is bundle and known.valid_from <= at < known.valid_until:
        _SIGNERS.touch(key)
        return known
    chain = _signer_chain(_header(header_text) if header is None else header)
    try:
        signer = bundle.verify(chain, now=at)
    except FabricError as exc:
        raise Unauthenticated(f"path token of {claims.subject!r}: signer rejected: {exc}") from None
    public = chain[0].public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise Unauthenticated("path token: the signer's key is not an EC key")
    anchors = bundle.bundle_for(signer.trust_domain)
    assert anchors is not None  # verify() found it
    certificates = [*chain, *anchors.roots]
    known = _Signer(
        bundle, str(signer), public,
        max(c.not_valid_before_utc.timestamp() for c in certificates),
        min(c.not_valid_after_utc.timestamp() for c in certificates),
        chain[0].not_valid_after_utc.timestamp(),
    )
    _SIGNERS.put(key, known)
    return known


@dataclass(frozen=True)
class _Verified:
    """A token whose signature and claims verified against ``signer`` (and its bundle)."""

    signer: _Signer
    claims: Claims


# A token travels the whole path, so each process sees it several times (every later hop of the
# request through it, then the close): its signature is checked once, keyed by the SHA-256 of
# the token's text (a text is ~1.6 KB, most of it the signer's chain; 512 of them were ~1 MB).
_VERIFIED_KEPT = 512
_VERIFIED: Lru[tuple[int, bytes], _Verified] = Lru(_VERIFIED_KEPT)


def _memo_key(bundle: Trust, token: str) -> tuple[int, bytes]:
    """The key of ``token`` verified against ``bundle`` in the verified-token memory."""
    return id(bundle), _digest(token)


def _remembered(key: tuple[int, bytes], bundle: Trust, at: float, allow_expired: bool,
                grace: float) -> _Verified | None:
    """What the token of ``key`` verified as before against ``bundle``, if its signer's chain
    is still valid at the instant this call checks it at."""
    known = _VERIFIED.get(key)
    if known is None or known.signer.bundle is not bundle:
        return None
    claims, signer = known.claims, known.signer
    if at - claims.expires_at > grace:  # no close can use it any more
        _VERIFIED.forget(key)
        return None
    when = min(at, max(claims.issued_at, at - grace)) if allow_expired else at
    if not signer.valid_from <= when < signer.valid_until:
        return None  # checked in full: the error names why
    _VERIFIED.touch(key)
    return known


def _remember(key: tuple[int, bytes], signer: _Signer, claims: Claims) -> None:
    _VERIFIED.put(key, _Verified(signer, claims))


def verify(
    token: str,
    bundle: Trust,
    now: float | None = None,
    *,
    audience: str | None = None,
    segment_id: str | None = None,
    previous_token: str | None = None,
    allow_expired: bool = False,
    skew: float = DEFAULT_SKEW,
    grace: float = CLOSE_GRACE,
) -> Claims:
    """Verify ``token``; see the module docstring. The keyword checks run when given;
    ``allow_expired`` accepts a token expired at most ``grace`` seconds ago (closes)."""
    at = time.time() if now is None else now
    memo = _memo_key(bundle, token)
    known = _remembered(memo, bundle, at, allow_expired, grace)
    if known is not None:  # its text was split and checked when it was first seen
        _check_times(known.claims, known.signer, at, allow_expired, grace, skew)
        _check_binding(known.claims, audience, segment_id, previous_token)
        return known.claims
    parts = _parts(token)
    # A header text whose signer is remembered was parsed and checked when it was first seen.
    header = None if (id(bundle), parts[0]) in _SIGNERS else _header(parts[0])
    claims = _claims(_json_object(parts[1], "claims"))
    # A close may come with a token that expired a little ago: its signer's certificate is
    # checked when the token was still good, but never earlier than the grace allows.
    when = min(at, max(claims.issued_at, at - grace)) if allow_expired else at
    signer = _signer(parts[0], header, bundle, claims, when)
    _check_signature(parts, signer, claims)
    _check_times(claims, signer, at, allow_expired, grace, skew)
    _check_binding(claims, audience, segment_id, previous_token)
    _remember(memo, signer, claims)
    return claims


def _parts(token: str) -> list[str]:
    """The three parts of a compact JWS, or Unauthenticated."""
    if not token:
        raise Unauthenticated("path token: missing (the previous hop did not sign its segment)")
    if len(token) > MAX_TOKEN:
        raise Unauthenticated(f"path token: longer than {MAX_TOKEN} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise Unauthenticated("path token: not a compact JWS (header.claims.signature)")
    return parts


def _check_signature(parts: list[str], signer: _Signer, claims: Claims) -> None:
    """The signature is the signer's, over header and claims, in canonical low-S form."""
    if signer.spiffe_id != claims.subject:
        raise Unauthenticated(
            f"path token: signed by {signer.spiffe_id} but claims to be from {claims.subject!r}"
        )
    signature = _unb64url(parts[2], "signature")
    if len(signature) != 2 * _CURVE_BYTES:
        raise Unauthenticated("path token: ES256 signatures are 64 bytes")
    r = int.from_bytes(signature[:_CURVE_BYTES], "big")
    s = int.from_bytes(signature[_CURVE_BYTES:], "big")
    if not (0 < r < _N and 0 < s <= _HALF_N):
        raise Unauthenticated(
            f"path token of {claims.subject}: signature is not in low-S form (s must be at most "
            "n/2; the signer must normalise it)"
        )
    der = encode_dss_signature(r, s)
    try:
        signer.key.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Unauthenticated(
            f"path token of {claims.subject}: signature does not verify (forged or altered)"
        ) from None


def _check_times(
    claims: Claims, signer: _Signer, at: float, allow_expired: bool, grace: float, skew: float
) -> None:
    """Not past its expiry (a close: not past the grace), not outliving its signer's
    certificate, not issued in the future."""
    if claims.expires_at > signer.leaf_until:
        raise Unauthenticated(
            f"path token of {claims.subject} claims to outlive its signer's certificate "
            "(tokens expire with the SVID that signs them)"
        )
    late = at - claims.expires_at
    if late >= 0 and not allow_expired:
        raise Unauthenticated(
            f"path token of {claims.subject} expired {late:.0f} s ago: "
            "the connection must be refreshed"
        )
    if late > grace:
        raise Unauthenticated(
            f"path token of {claims.subject} expired {late:.0f} s ago, longer than a close "
            f"accepts ({grace:.0f} s): the connection has timed out at this hop already"
        )
    if at < claims.issued_at - skew:
        raise Unauthenticated(f"path token of {claims.subject} is issued in the future")


def _check_binding(
    claims: Claims, audience: str | None, segment_id: str | None, previous_token: str | None
) -> None:
    """Issued for this audience, this segment, after this previous token (those given)."""
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
