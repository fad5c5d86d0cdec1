"""Attacks on trust federation: a federated trust domain's operator (who holds its CA key) tries
to speak for identities that are not theirs — a local ID, or a third trust domain's — over mTLS
and in path tokens; a federation that was removed, or a "federated" bundle of the local trust
domain planted in an SVID directory, must not vouch for anyone.

The attacker's certificates are real: cloud-b's root key signs leaves that claim other trust
domains' SPIFFE IDs (what a compromised or malicious cloud-b CA can do)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sdk.errors import Unauthenticated
from sdk.security import token
from sdk.security.ca import CertificateAuthority, new_key
from sdk.security.federation import BundleSet, write_federated
from sdk.security.source import CaSvidSource, FileSvidSource
from sdk.security.svid import FEDERATED_DIR, Svid, TrustBundle, load_private_key, write_svid
from sdk.security.tls import secure_channel, server_name
from tests.integration.fabric import TRUST_DOMAIN, Identities, temporary_fabric
from tests.integration.test_federation_mtls import ca_certificate, check, serve_tls

A, B, C = "cloud-a", "cloud-b", "cloud-c"
LOCAL_NSMGR = f"spiffe://{A}/nsmgr/a1"
THIRD_NSE = f"spiffe://{C}/nse/db"
SERVER = f"spiffe://{A}/gateway/a"


@pytest.fixture
def cas(tmp_path: Path) -> dict[str, CertificateAuthority]:
    return {td: CertificateAuthority.init(tmp_path / f"ca-{td}", td) for td in (A, B, C)}


def forged(cas: dict[str, CertificateAuthority], tmp_path: Path, claimed: str) -> Svid:
    """A leaf signed by cloud-b's real root key, claiming ``claimed`` (another trust domain)."""
    key = load_private_key((tmp_path / f"ca-{B}" / "root.key").read_bytes(), "root.key")
    rogue = CertificateAuthority(claimed.split("/")[2], cas[B].root, key)
    return rogue.issue(claimed, [server_name(A)])


@pytest.fixture
async def servers() -> AsyncIterator[list[grpc.aio.Server]]:
    running: list[grpc.aio.Server] = []
    yield running
    for server in running:
        await server.stop(0)


def test_a_foreign_root_never_vouches_for_a_local_id(
    cas: dict[str, CertificateAuthority], tmp_path: Path
) -> None:
    trust = BundleSet(cas[A].bundle, (cas[B].bundle,))
    with pytest.raises(Unauthenticated, match="not signed by a root of trust domain 'cloud-a'"):
        trust.verify(forged(cas, tmp_path, LOCAL_NSMGR).chain)


def test_a_foreign_root_never_vouches_for_a_third_trust_domain(
    cas: dict[str, CertificateAuthority], tmp_path: Path
) -> None:
    trust = BundleSet(cas[A].bundle, (cas[B].bundle, cas[C].bundle))
    with pytest.raises(Unauthenticated, match="not signed by a root of trust domain 'cloud-c'"):
        trust.verify(forged(cas, tmp_path, THIRD_NSE).chain)
    unfederated = BundleSet(cas[A].bundle, (cas[B].bundle,))
    with pytest.raises(Unauthenticated, match="'cloud-c', which is not federated"):
        unfederated.verify(forged(cas, tmp_path, THIRD_NSE).chain)


async def test_over_mtls_a_foreign_root_signing_a_local_id_is_refused_before_the_servicer(
    cas: dict[str, CertificateAuthority], tmp_path: Path, servers: list[grpc.aio.Server]
) -> None:
    """The server trusts cloud-b's root for the TLS handshake (it federates cloud-b), so gRPC
    accepts the forged certificate; PeerTrust must refuse the call."""
    cas[A].federate(cas[B].bundle)
    server = await serve_tls(servers, tmp_path / "a.sock",
                             CaSvidSource(cas[A], SERVER, [server_name(A)]))
    svids = tmp_path / "attacker"
    write_svid(svids, forged(cas, tmp_path, LOCAL_NSMGR), cas[A].bundle)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(server.address, FileSvidSource(svids), A)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "not signed by a root of trust domain 'cloud-a'" in (caught.value.details() or "")
    assert server.recorder.callers == []


def test_a_token_signed_in_one_trust_domain_cannot_claim_an_id_of_another(
    cas: dict[str, CertificateAuthority], tmp_path: Path
) -> None:
    trust = BundleSet(cas[A].bundle, (cas[B].bundle, cas[C].bundle))
    # cloud-b's root signs a leaf claiming a cloud-c ID, which signs the token.
    signed, _ = token.sign(forged(cas, tmp_path, THIRD_NSE), LOCAL_NSMGR, "seg")
    with pytest.raises(Unauthenticated, match="not signed by a root of trust domain 'cloud-c'"):
        token.verify(signed, trust, audience=LOCAL_NSMGR)
    # A genuine cloud-b signer whose claims are rewritten to name a cloud-c subject.
    honest = f"spiffe://{B}/nse/db"
    header, claims, signature = token.sign(cas[B].issue(honest), LOCAL_NSMGR, "seg")[0].split(".")
    with pytest.raises(Unauthenticated, match=f"signed by {honest} but claims to be from"):
        token.verify(f"{header}.{_with_subject(claims, THIRD_NSE)}.{signature}", trust,
                     audience=LOCAL_NSMGR)


def _with_subject(claims: str, subject: str) -> str:
    payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    payload["sub"] = subject
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_removed_federation_refuses_tokens_at_once(
    cas: dict[str, CertificateAuthority], tmp_path: Path
) -> None:
    svids = tmp_path / "svid"
    write_svid(svids, cas[A].issue(LOCAL_NSMGR), cas[A].bundle)
    write_federated(svids, (cas[B].bundle,))
    source = FileSvidSource(svids, poll=0)
    signed, _ = token.sign(cas[B].issue(f"spiffe://{B}/nse/db"), LOCAL_NSMGR, "seg")
    assert token.verify(signed, source.current().trust, audience=LOCAL_NSMGR)
    write_federated(svids, ())
    with pytest.raises(Unauthenticated, match="'cloud-b', which is not federated"):
        token.verify(signed, source.current().trust, audience=LOCAL_NSMGR)


def test_a_planted_federated_bundle_of_the_local_trust_domain_is_never_used(
    cas: dict[str, CertificateAuthority], tmp_path: Path
) -> None:
    """Someone writes cloud-b's root as federated/cloud-a.pem (or a rogue root naming cloud-a):
    the source keeps its previous material, which does not trust it."""
    svids = tmp_path / "svid"
    write_svid(svids, cas[A].issue(LOCAL_NSMGR), cas[A].bundle)
    source = FileSvidSource(svids, poll=0)
    before = source.current()
    (svids / FEDERATED_DIR).mkdir()
    (svids / FEDERATED_DIR / f"{A}.pem").write_bytes(cas[B].bundle.pem())
    (svids / FEDERATED_DIR / f"{A}.pem").chmod(0o644)
    assert source.current() is before
    with pytest.raises(Unauthenticated):
        source.current().trust.verify(forged(cas, tmp_path, LOCAL_NSMGR).chain)
    rogue = CertificateAuthority.create(A, now=time.time() - 60)
    (svids / FEDERATED_DIR / f"{A}.pem").write_bytes(rogue.bundle.pem())
    assert source.current() is before


async def test_a_real_nsmgr_serves_federated_peers_and_refuses_a_forged_local_id(
    cas: dict[str, CertificateAuthority], tmp_path: Path
) -> None:
    """A running nsmgr (real gRPC over TCP+mTLS) of a fabric whose CA federates cloud-b: a
    genuine cloud-b identity is served; cloud-b's root signing the ID of one of the fabric's own
    nsmgrs is refused before any servicer runs."""
    async with temporary_fabric("vwfed-", identities=True) as fab:
        assert fab.identities is not None
        fab.identities.ca.federate(cas[B].bundle)
        await fab.start(1)
        nsmgr = fab.nodes[0].nsmgr
        assert nsmgr is not None
        address = next(a for a in nsmgr.bound if a.scheme == "tcp")
        cas[B].federate(fab.identities.ca.bundle)
        honest = CaSvidSource(cas[B], f"spiffe://{B}/gateway/b")
        async with secure_channel(address, honest, trust_domain=TRUST_DOMAIN) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        svids = tmp_path / "forged"
        local_id = Identities.spiffe_id("nsmgr", "nsmgr-n2")
        write_svid(svids, forged(cas, tmp_path, local_id), fab.identities.ca.bundle)
        async with secure_channel(address, FileSvidSource(svids)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert f"not signed by a root of trust domain {TRUST_DOMAIN!r}" in (
            caught.value.details() or "")


async def test_an_intermediate_under_a_federated_root_cannot_speak_for_local_ids(
    cas: dict[str, CertificateAuthority], tmp_path: Path, servers: list[grpc.aio.Server]
) -> None:
    """cloud-b (a CA with intermediates, as SPIRE can have) makes an intermediate that names
    cloud-a and issues a cloud-a nsmgr ID from it: the handshake passes, the call is refused."""
    root_key, sub_key = new_key(), new_key()
    root = ca_certificate(B, root_key, None, root_key, 1)
    sub = ca_certificate(B, sub_key, root, root_key, 0)
    cas[A].federate(TrustBundle(B, (root,)))
    server = await serve_tls(servers, tmp_path / "a.sock",
                             CaSvidSource(cas[A], SERVER, [server_name(A)]))
    leaf = CertificateAuthority(A, sub, sub_key).issue(LOCAL_NSMGR)  # the intermediate's key
    svids = tmp_path / "attacker"
    write_svid(svids, Svid((leaf.leaf, sub), leaf.key), cas[A].bundle)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(server.address, FileSvidSource(svids), A)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "not signed by a root of trust domain 'cloud-a'" in (caught.value.details() or "")
    assert server.recorder.callers == []
