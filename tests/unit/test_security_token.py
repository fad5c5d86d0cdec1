"""Path tokens and the SignPathSegment / VerifyPath elements: a valid chain passes; forged,
tampered, misaddressed, replayed, expired, foreign and mis-chained tokens are refused with the
reason."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import REGISTRY

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext
from sdk.errors import FailedPrecondition, PermissionDenied, Unauthenticated
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement, NSCursor
from sdk.networkservice.token import CLIENT_ID, PATH_IDS, SignPathSegment, VerifyPath
from sdk.networkservice.updatepath import UpdatePath
from sdk.security import token
from sdk.security.ca import CertificateAuthority
from sdk.security.source import CaSvidSource

TD = "example.org"
NSC = "spiffe://example.org/nsc/web"
NSMGR = "spiffe://example.org/nsmgr/node1"
NSE = "spiffe://example.org/nse/db"
DER = Encoding.DER


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Hops:
    """Three hops (client, nsmgr, endpoint) of one trust domain, on one settable clock."""

    def __init__(self) -> None:
        self.ca = CertificateAuthority.create(TD)
        self.clock = Clock(self.ca.root.not_valid_before_utc.timestamp() + 3600)
        self.nsc = CaSvidSource(self.ca, NSC, ttl=3600, clock=self.clock)
        self.nsmgr = CaSvidSource(self.ca, NSMGR, ttl=3600, clock=self.clock)
        self.nse = CaSvidSource(self.ca, NSE, ttl=3600, clock=self.clock)

    async def client_request(self, conn_id: str = "conn-a", audience: str = NSMGR) -> Connection:
        """What the client sends: its segment, signed for ``audience``."""
        chain = NetworkServiceChain([
            UpdatePath("nsc"), SignPathSegment(self.nsc, audience, clock=self.clock),
        ])
        request = NetworkServiceRequest(connection=Connection(id=conn_id, network_service="db"))
        return await chain.run_request(request)

    def nsmgr_chain(self, capture: list[NetworkServiceRequest]) -> NetworkServiceChain:
        return NetworkServiceChain([
            VerifyPath(self.nsmgr, clock=self.clock), UpdatePath("nsmgr"),
            SignPathSegment(self.nsmgr, NSE, clock=self.clock), Capture(capture),
        ])

    def nse_chain(self, seen: list[CallContext]) -> NetworkServiceChain:
        return NetworkServiceChain([
            VerifyPath(self.nse, clock=self.clock), UpdatePath("nse"), Context(seen),
        ])


class Capture(NetworkServiceElement):
    """Keeps a copy of each request that reaches it."""

    def __init__(self, into: list[NetworkServiceRequest]) -> None:
        self.into = into

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        copy = NetworkServiceRequest()
        copy.CopyFrom(request)
        self.into.append(copy)
        return await next.request(request)


class Context(NetworkServiceElement):
    """Keeps the call context of each request that reaches it."""

    def __init__(self, into: list[CallContext]) -> None:
        self.into = into

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        self.into.append(next.ctx)
        return await next.request(request)


@pytest.fixture
def hops() -> Hops:
    return Hops()


def denied_count(kind: str) -> float:
    return REGISTRY.get_sample_value("vwire_authz_denied_total", {"kind": kind}) or 0.0


async def forward(hops: Hops, conn: Connection) -> NetworkServiceRequest:
    """Send the client's connection through the nsmgr; returns what the nsmgr sends on."""
    sent: list[NetworkServiceRequest] = []
    await hops.nsmgr_chain(sent).run_request(
        NetworkServiceRequest(connection=conn), CallContext(peer=NSC)
    )
    return sent[0]


async def test_a_valid_chain_passes_every_hop_and_names_the_client(hops: Hops) -> None:
    conn = await hops.client_request()
    segment = conn.path.path_segments[0]
    assert segment.token and segment.expires.seconds == int(hops.clock.now + token.DEFAULT_LIFETIME)
    onward = await forward(hops, conn)
    seen: list[CallContext] = []
    await hops.nse_chain(seen).run_request(onward, CallContext(peer=NSMGR))
    assert seen[0].values[CLIENT_ID] == NSC
    assert seen[0].values[PATH_IDS] == [NSC, NSMGR]


async def test_token_expiry_never_outlives_the_svid(hops: Hops) -> None:
    svid = hops.ca.issue(NSC, ttl=60, now=hops.clock.now)
    _, expires = token.sign(svid, NSMGR, "seg", lifetime=600, now=hops.clock.now)
    assert expires <= svid.not_after


def test_each_svid_signs_with_its_own_chain(hops: Hops) -> None:
    """The protected header is made once per SVID: a renewed SVID's tokens carry its chain."""
    ca, now = hops.ca, hops.clock.now
    first, renewed = ca.issue(NSMGR, ttl=3600, now=now), ca.issue(NSMGR, ttl=3600, now=now)
    for svid in (first, renewed, first):
        tok, _ = token.sign(svid, NSE, "seg", now=now)
        head = tok.split(".")[0]
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
        assert header["x5c"][0] == base64.b64encode(svid.leaf.public_bytes(DER)).decode()
        assert token.verify(tok, ca.bundle, now, audience=NSE).subject == NSMGR


def _with_part(tok: str, index: int, change: Callable[[dict[str, object]], None]) -> str:
    parts = tok.split(".")
    value = json.loads(base64.urlsafe_b64decode(parts[index] + "=" * (-len(parts[index]) % 4)))
    change(value)
    parts[index] = base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return ".".join(parts)


def _flip_signature(tok: str) -> str:
    head, claims, sig = tok.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[10] ^= 0x01
    return f"{head}.{claims}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


def _set(key: str, value: object) -> Callable[[dict[str, object]], None]:
    return lambda d: d.__setitem__(key, value)


@pytest.mark.parametrize(
    ("attack", "error", "reason"),
    [
        (_flip_signature, Unauthenticated, "signature does not verify"),
        (lambda t: _with_part(t, 1, _set("aud", NSMGR + "x")), Unauthenticated,
         "signature does not verify"),
        (lambda t: _with_part(t, 1, _set("exp", 4e9)), Unauthenticated,
         "signature does not verify"),
        (lambda t: _with_part(t, 0, _set("alg", "none")), Unauthenticated, "algorithm must be"),
        (lambda t: _with_part(t, 0, _set("x5c", [])), Unauthenticated, "x5c"),
        (lambda t: _with_part(t, 0, _set("x5c", ["bm90IGEgY2VydA=="])), Unauthenticated,
         "malformed certificate"),
        (lambda t: t.rsplit(".", 1)[0], Unauthenticated, "not a compact JWS"),
        (lambda t: "", Unauthenticated, "is not signed"),
        (lambda t: "x" * (token.MAX_TOKEN + 1), Unauthenticated, "longer than"),
        (lambda t: "a.b.c", Unauthenticated, "not JSON|not base64url"),
    ],
)
async def test_forged_tampered_and_malformed_tokens_are_refused(
    hops: Hops, attack: Callable[[str], str], error: type[Exception], reason: str
) -> None:
    conn = await hops.client_request()
    conn.path.path_segments[0].token = attack(conn.path.path_segments[0].token)
    before = denied_count("token")
    with pytest.raises(error, match=reason):
        await forward(hops, conn)
    assert denied_count("token") == before + 1


async def test_a_token_for_another_audience_is_refused(hops: Hops) -> None:
    conn = await hops.client_request(audience=NSE)
    with pytest.raises(PermissionDenied, match=f"is for {NSE}, not {NSMGR}"):
        await forward(hops, conn)


async def test_a_token_replayed_on_another_connection_is_refused(hops: Hops) -> None:
    stolen = (await hops.client_request("conn-a")).path.path_segments[0].token
    other = await hops.client_request("conn-b")
    other.path.path_segments[0].token = stolen
    with pytest.raises(PermissionDenied, match="'conn-a', not 'conn-b' \\(replayed"):
        await forward(hops, other)


async def test_an_expired_token_is_refused_but_close_still_works(hops: Hops) -> None:
    conn = await hops.client_request()
    hops.clock.now += token.DEFAULT_LIFETIME + 1
    with pytest.raises(Unauthenticated, match=r"expired .* must be refreshed"):
        await forward(hops, conn)
    chain = hops.nsmgr_chain([])
    await chain.run_close(conn, CallContext(peer=NSC))  # closing needs no fresh token


async def test_a_signer_outside_the_bundle_is_refused(hops: Hops) -> None:
    foreign = CertificateAuthority.create(TD)  # same trust domain name, other root key
    evil = CaSvidSource(foreign, NSC, clock=hops.clock)
    conn = await hops.client_request()
    segment = conn.path.path_segments[0]
    segment.token, _ = token.sign(evil.current().svid, NSMGR, segment.id, now=hops.clock.now)
    with pytest.raises(Unauthenticated, match=r"signer rejected: .*not signed by a root"):
        await forward(hops, conn)


async def test_a_token_claiming_another_subject_is_refused(hops: Hops) -> None:
    conn = await hops.client_request()
    segment = conn.path.path_segments[0]
    nse_svid = hops.nse.current().svid
    segment.token = _with_part(
        token.sign(nse_svid, NSMGR, segment.id, now=hops.clock.now)[0], 1, _set("sub", NSC)
    )
    with pytest.raises(Unauthenticated, match=r"signature does not verify|claims to be from"):
        await forward(hops, conn)


async def test_the_tls_peer_must_be_the_last_signer(hops: Hops) -> None:
    conn = await hops.client_request()
    with pytest.raises(PermissionDenied, match=r"call comes from spiffe://example\.org/nse/db"):
        await hops.nsmgr_chain([]).run_request(
            NetworkServiceRequest(connection=conn), CallContext(peer=NSE)
        )


async def test_unix_peers_are_refused_when_not_trusted(hops: Hops) -> None:
    conn = await hops.client_request()
    chain = NetworkServiceChain([VerifyPath(hops.nsmgr, trust_unix_peers=False,
                                            clock=hops.clock)])
    with pytest.raises(Unauthenticated, match="has no SPIFFE ID"):
        await chain.run_request(NetworkServiceRequest(connection=conn), CallContext(peer="unix:"))
    trusting = NetworkServiceChain([VerifyPath(hops.nsmgr, clock=hops.clock)])
    await trusting.run_request(NetworkServiceRequest(connection=conn), CallContext(peer="unix:"))


async def test_a_broken_subject_audience_chain_is_refused(hops: Hops) -> None:
    onward = await forward(hops, await hops.client_request())
    # The nsmgr's segment re-signed by the endpoint's key: the client handed the segment to
    # the nsmgr, not to the endpoint.
    seg0, seg1 = onward.connection.path.path_segments
    seg1.token, _ = token.sign(hops.nse.current().svid, NSE, seg1.id, seg0.token,
                               now=hops.clock.now)
    with pytest.raises(PermissionDenied, match="broken chain"):
        await hops.nse_chain([]).run_request(onward, CallContext(peer=NSE))


async def test_a_segment_not_chained_to_the_previous_token_is_refused(hops: Hops) -> None:
    onward = await forward(hops, await hops.client_request())
    seg1 = onward.connection.path.path_segments[1]
    seg1.token, _ = token.sign(hops.nsmgr.current().svid, NSE, seg1.id, "another token",
                               now=hops.clock.now)
    with pytest.raises(PermissionDenied, match="does not chain to the previous"):
        await hops.nse_chain([]).run_request(onward, CallContext(peer=NSMGR))


async def test_a_request_without_a_path_is_refused(hops: Hops) -> None:
    chain = NetworkServiceChain([VerifyPath(hops.nsmgr, clock=hops.clock)])
    with pytest.raises(Unauthenticated, match="no signed path"):
        await chain.run_request(NetworkServiceRequest(connection=Connection(id="x")))


async def test_signing_needs_the_next_hops_identity(hops: Hops) -> None:
    chain = NetworkServiceChain([UpdatePath("nsc"), SignPathSegment(hops.nsc)])
    with pytest.raises(FailedPrecondition, match="next hop's SPIFFE ID is unknown"):
        await chain.run_request(NetworkServiceRequest(connection=Connection(id="c")))


def test_a_remembered_signer_is_still_checked_against_bundle_and_time() -> None:
    ca = CertificateAuthority.create(TD)
    start = ca.root.not_valid_before_utc.timestamp() + 3600
    svid = ca.issue(NSC, ttl=600, now=start)
    signed, _ = token.sign(svid, NSMGR, "seg", now=start, lifetime=60)
    assert token.verify(signed, ca.bundle, start + 1).subject == NSC  # the chain is remembered
    foreign = CertificateAuthority.create(TD)  # same name, other root: the memory does not apply
    with pytest.raises(Unauthenticated, match="signer rejected"):
        token.verify(signed, foreign.bundle, start + 1)
    with pytest.raises(Unauthenticated, match="signer rejected"):  # the SVID has expired since
        token.verify(signed, ca.bundle, start + 601)
    assert token.verify(signed, ca.bundle, start + 2).subject == NSC
