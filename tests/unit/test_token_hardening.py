"""Path tokens over time and across re-signing (issue 12, items 2, 8 and 9), on a settable clock:
real SVIDs of a real CA, the real SignPathSegment/VerifyPath elements.

Closes check the signer's certificate at the current time (within a bounded grace), so a token
signed after its SVID expired, with a back-dated ``iat``, closes nothing; a close may carry a
segment re-signed since (the nsmgr closing an old path during a refresh) only when the same
signer re-signed it. Signing is always low-S; claims out of range are refused with a reason.
"""

from __future__ import annotations

import base64
import json

import pytest

from api.proto.connection_pb2 import Connection, Mechanism
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext
from sdk.errors import PermissionDenied, Unauthenticated
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement, NSCursor
from sdk.networkservice.token import SignPathSegment, VerifyPath
from sdk.networkservice.updatepath import UpdatePath
from sdk.security import token
from sdk.security.ca import CertificateAuthority
from sdk.security.source import CaSvidSource

TD = "example.org"
NSC = "spiffe://example.org/nsc/web"
EVIL = "spiffe://example.org/nsc/evil"
NSMGR = "spiffe://example.org/nsmgr/node1"
NSE = "spiffe://example.org/nse/db"
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def kernel() -> Mechanism:
    """The client's KERNEL mechanism: its namespace and interface name."""
    return Mechanism(cls="LOCAL", type="KERNEL",
                     parameters={"inodeURL": "inode://4/4026532", "name": "nsm0"})


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Closed(NetworkServiceElement):
    """Terminal: records what reached it."""

    def __init__(self) -> None:
        self.closed: list[str] = []
        self.sent: list[Connection] = []

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        copy = Connection()
        copy.CopyFrom(request.connection)
        self.sent.append(copy)
        return request.connection

    async def close(self, conn: Connection, next: NSCursor) -> None:
        self.closed.append(conn.id)


class Hops:
    """Client → nsmgr → endpoint on one clock, the CA a day old."""

    def __init__(self) -> None:
        self.clock = Clock(0.0)
        self.ca = CertificateAuthority.create(TD)
        self.clock.now = self.ca.root.not_valid_before_utc.timestamp() + 3600
        self.nsc = CaSvidSource(self.ca, NSC, ttl=3600, clock=self.clock)
        self.nsmgr = CaSvidSource(self.ca, NSMGR, ttl=3600, clock=self.clock)
        self.nse = CaSvidSource(self.ca, NSE, ttl=3600, clock=self.clock)
        self.at_nsmgr = Closed()
        self.at_nse = Closed()

    async def client(self, conn: Connection | None = None) -> Connection:
        chain = NetworkServiceChain([UpdatePath("nsc"),
                                     SignPathSegment(self.nsc, NSMGR, clock=self.clock)])
        request = NetworkServiceRequest(
            connection=conn or Connection(id="conn-a", network_service="db"),
            mechanism_preferences=[kernel()],
        )
        request.connection.path.index = 0
        sent: Connection = await chain.run_request(request)
        return sent

    def nsmgr_chain(self) -> NetworkServiceChain:
        return NetworkServiceChain([
            VerifyPath(self.nsmgr, clock=self.clock), UpdatePath("nsmgr"),
            SignPathSegment(self.nsmgr, NSE, clock=self.clock), self.at_nsmgr,
        ])

    def nse_chain(self) -> NetworkServiceChain:
        return NetworkServiceChain([
            VerifyPath(self.nse, clock=self.clock), UpdatePath("nse"), self.at_nse,
        ])

    async def through_nsmgr(self, conn: Connection) -> Connection:
        await self.nsmgr_chain().run_request(
            NetworkServiceRequest(connection=conn, mechanism_preferences=[kernel()]),
            CallContext(peer=NSC))
        return self.at_nsmgr.sent[-1]

    async def whole_path(self) -> Connection:
        """A connection as the endpoint holds it: client, nsmgr and endpoint segments."""
        sent = await self.through_nsmgr(await self.client())
        await self.nse_chain().run_request(
            NetworkServiceRequest(connection=sent, mechanism_preferences=[kernel()]),
            CallContext(peer=NSMGR))
        return self.at_nse.sent[-1]


@pytest.fixture
def hops() -> Hops:
    return Hops()


async def test_a_close_signed_after_the_svid_expired_with_a_back_dated_iat_is_refused(
    hops: Hops,
) -> None:
    conn = await hops.through_nsmgr(await hops.client())
    conn.path.index = 0
    old_svid = hops.nsc.current().svid
    hops.clock.now = old_svid.not_after + 3600  # an hour after the client's SVID expired
    segment = conn.path.path_segments[0]
    # The holder of the expired key signs now, claiming a time the SVID was still valid.
    back_dated, _ = token.sign(old_svid, NSMGR, segment.id, now=old_svid.not_after - 60)
    forged = Connection()
    forged.CopyFrom(conn)
    forged.path.path_segments[0].token = back_dated
    with pytest.raises(Unauthenticated, match=r"path token of .*expired"):
        await hops.nsmgr_chain().run_close(forged, CallContext(peer="unix:"))
    assert hops.at_nsmgr.closed == []


async def test_closes_accept_tokens_expired_within_the_grace_only(hops: Hops) -> None:
    conn = await hops.through_nsmgr(await hops.client())
    conn.path.index = 0
    expires = token.verify(conn.path.path_segments[0].token, hops.ca.bundle,
                           hops.clock.now).expires_at
    hops.clock.now = expires + token.CLOSE_GRACE - 1  # a timeout's close comes a little late
    await hops.nsmgr_chain().run_close(conn, CallContext(peer="unix:"))
    assert hops.at_nsmgr.closed == [conn.path.path_segments[1].id]
    hops.clock.now = expires + token.CLOSE_GRACE + 1
    with pytest.raises(Unauthenticated, match=r"longer than a close accepts \(300 s\)"):
        await hops.nsmgr_chain().run_close(conn, CallContext(peer="unix:"))
    assert len(hops.at_nsmgr.closed) == 1


async def test_a_close_with_a_segment_re_signed_by_the_same_signer_still_works(
    hops: Hops,
) -> None:
    first = await hops.whole_path()
    hops.clock.now += 60
    refreshed = await hops.client(first)  # the client re-signs; the nsmgr's segment is older
    old_path = Connection()
    old_path.CopyFrom(first)
    old_path.path.path_segments[0].CopyFrom(refreshed.path.path_segments[0])
    assert old_path.path.path_segments[0].token != first.path.path_segments[0].token
    old_path.path.index = 1
    await hops.nse_chain().run_close(old_path, CallContext(peer=NSMGR))
    assert hops.at_nse.closed == [first.path.path_segments[2].id]


async def test_a_close_splicing_another_signers_segment_is_refused(hops: Hops) -> None:
    first = await hops.whole_path()
    evil = CaSvidSource(hops.ca, EVIL, ttl=3600, clock=hops.clock)
    spliced = Connection()
    spliced.CopyFrom(first)
    spliced.path.index = 1
    seg0 = spliced.path.path_segments[0]
    seg0.token, _ = token.sign(evil.current().svid, NSMGR, seg0.id, now=hops.clock.now)
    with pytest.raises(PermissionDenied, match=r"segment 1\) does not chain .*nsc/evil"):
        await hops.nse_chain().run_close(spliced, CallContext(peer=NSMGR))
    assert hops.at_nse.closed == []


async def test_a_token_is_bound_to_the_requests_namespace_interface_service_and_labels(
    hops: Hops,
) -> None:
    conn = await hops.client()
    for change in ("inodeURL", "name", "service", "labels"):
        request = NetworkServiceRequest(mechanism_preferences=[kernel()])
        request.connection.CopyFrom(conn)
        if change in ("inodeURL", "name"):
            request.mechanism_preferences[0].parameters[change] = "other"
        elif change == "service":
            request.connection.network_service = "secret"
        else:
            request.connection.labels["app"] = "admin"
        with pytest.raises(PermissionDenied, match="replayed"):
            await hops.nsmgr_chain().run_request(request, CallContext(peer="unix:"))
    assert hops.at_nsmgr.sent == []


def test_signatures_are_always_low_s_and_canonical(hops: Hops) -> None:
    svid = hops.nsc.current().svid
    for i in range(64):
        text, _ = token.sign(svid, NSMGR, f"seg-{i}", now=hops.clock.now)
        signature = text.split(".")[2]
        raw = base64.urlsafe_b64decode(signature + "==")
        assert int.from_bytes(raw[32:], "big") <= N // 2
        assert base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == signature
        token.verify(text, hops.ca.bundle, hops.clock.now)


@pytest.mark.parametrize(("iat", "why"), [
    pytest.param(10**400, "between 0 and", id="10**400"), (1e300, "between 0 and"),
    (-1, "between 0 and"), ("1", "must be a number"), (True, "must be a number"),
])
def test_times_out_of_range_are_refused_with_a_reason(
    hops: Hops, iat: object, why: str
) -> None:
    svid = hops.nsc.current().svid
    header = token.sign(svid, NSMGR, "seg", now=hops.clock.now)[0].split(".")[0]
    claims = {"sub": NSC, "aud": NSMGR, "cid": "seg", "prev": "", "iat": iat, "exp": 1}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated, match=why):
        token.verify(f"{header}.{body}.AAAA", hops.ca.bundle, hops.clock.now,
                     allow_expired=True)
