"""mTLS across trust domains with real grpc.aio servers on temporary unix sockets: a client of
trust domain cloud-a calls a server of cloud-b. Both federated: the call works and the server
sees the client's own SPIFFE ID; one side not federated: refused, naming the trust domain and
the fix; a federated bundle written into the server's SVID directory is picked up without a
restart, and removing it refuses the next call at once."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sdk.errors import Unauthenticated
from sdk.grpcutil import parse_address
from sdk.security.ca import CertificateAuthority, new_key
from sdk.security.federation import write_federated
from sdk.security.peer import peer_spiffe_id
from sdk.security.peertrust import PeerTrust
from sdk.security.source import CaSvidSource, FileSvidSource, SvidSource
from sdk.security.svid import PrivateKey, Svid, write_svid
from sdk.security.tls import SecureChannelFactory, secure_channel, server_name

A, B = "cloud-a", "cloud-b"
CLIENT = f"spiffe://{A}/nsmgr/a1"
SERVER = f"spiffe://{B}/gateway/b"
CALL_TIMEOUT = 5.0


@dataclass
class Recorder(health_pb2_grpc.HealthServicer):
    """A health service that records who called it, as the TLS handshake proved it."""

    callers: list[str | None] = field(default_factory=list)

    async def Check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.callers.append(peer_spiffe_id(context))
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@dataclass
class TlsServer:
    address: str
    recorder: Recorder


def ca_certificate(
    trust_domain: str, key: PrivateKey, issuer: x509.Certificate | None, issuer_key: PrivateKey,
    path_length: int,
) -> x509.Certificate:
    """A CA certificate for ``trust_domain`` (URI SAN ``spiffe://<td>``) signed by ``issuer``
    (None: self-signed, a root)."""
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} {path_length}")])
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def two_level_ca(trust_domain: str) -> tuple[CertificateAuthority, CertificateAuthority]:
    """A root that allows one intermediate, and a CA issuing from an intermediate under it."""
    root_key, sub_key = new_key(), new_key()
    root = ca_certificate(trust_domain, root_key, None, root_key, 1)
    sub = ca_certificate(trust_domain, sub_key, root, root_key, 0)
    return CertificateAuthority(trust_domain, root, root_key), CertificateAuthority(
        trust_domain, sub, sub_key)


@pytest.fixture
def cas() -> dict[str, CertificateAuthority]:
    then = time.time() - 3600
    return {td: CertificateAuthority.create(td, now=then) for td in (A, B)}


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[list[grpc.aio.Server]]:
    running: list[grpc.aio.Server] = []
    yield running
    for server in running:
        await server.stop(0)


async def serve_tls(
    running: list[grpc.aio.Server], path: Path | None, source: SvidSource
) -> TlsServer:
    """A real grpc.aio server with mTLS on a unix socket (None: TCP on 127.0.0.1), federated
    as ``source`` says."""
    peers = PeerTrust(source)
    server = grpc.aio.server(interceptors=[peers])
    recorder = Recorder()
    health_pb2_grpc.add_HealthServicer_to_server(recorder, server)
    target = f"unix://{path}" if path is not None else "127.0.0.1:0"
    port = server.add_secure_port(target, peers.credentials())
    await server.start()
    running.append(server)
    return TlsServer(f"unix://{path}" if path is not None else f"tcp://127.0.0.1:{port}",
                     recorder)


async def check(address: str, client: SvidSource, trust_domain: str) -> None:
    channel = secure_channel(parse_address(address), client, trust_domain=trust_domain)
    async with channel:
        await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT
        )


async def test_federated_both_ways_the_call_works_and_ids_keep_their_trust_domain(
    tmp_path: Path, cas: dict[str, CertificateAuthority], servers: list[grpc.aio.Server]
) -> None:
    cas[A].federate(cas[B].bundle)
    cas[B].federate(cas[A].bundle)
    server = await serve_tls(servers, tmp_path / "b.sock",
                             CaSvidSource(cas[B], SERVER, [server_name(B)]))
    await check(server.address, CaSvidSource(cas[A], CLIENT), B)
    assert server.recorder.callers == [CLIENT]


async def test_a_client_that_does_not_federate_the_servers_trust_domain_refuses_to_dial(
    tmp_path: Path, cas: dict[str, CertificateAuthority], servers: list[grpc.aio.Server]
) -> None:
    cas[B].federate(cas[A].bundle)
    server = await serve_tls(servers, tmp_path / "b.sock",
                             CaSvidSource(cas[B], SERVER, [server_name(B)]))
    with pytest.raises(Unauthenticated) as caught:
        await check(server.address, CaSvidSource(cas[A], CLIENT), B)
    assert f"trust domain {B!r} is not federated with {A!r}" in str(caught.value)
    assert "nsmctl ca federate" in str(caught.value)
    assert server.recorder.callers == []


async def test_a_server_that_does_not_federate_the_clients_trust_domain_refuses_it(
    tmp_path: Path, cas: dict[str, CertificateAuthority], servers: list[grpc.aio.Server]
) -> None:
    cas[A].federate(cas[B].bundle)
    server = await serve_tls(servers, tmp_path / "b.sock",
                             CaSvidSource(cas[B], SERVER, [server_name(B)]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(server.address, CaSvidSource(cas[A], CLIENT), B)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails
    assert server.recorder.callers == []


async def test_federation_reaches_a_running_server_and_its_removal_refuses_at_once(
    tmp_path: Path, cas: dict[str, CertificateAuthority], servers: list[grpc.aio.Server]
) -> None:
    """The server reads its SVID directory (as every process does); the CA agent's writes of
    ``federated/`` are simulated by writing it directly."""
    svids = tmp_path / "svid"
    write_svid(svids, cas[B].issue(SERVER, [server_name(B)]), cas[B].bundle)
    source = FileSvidSource(svids, poll=0)
    server = await serve_tls(servers, tmp_path / "b.sock", source)
    cas[A].federate(cas[B].bundle)
    client = CaSvidSource(cas[A], CLIENT)
    with pytest.raises(grpc.aio.AioRpcError):
        await check(server.address, client, B)
    write_federated(svids, (cas[A].bundle,))  # the new bundle arrives: no restart
    channel = secure_channel(parse_address(server.address), client, trust_domain=B)
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
        assert server.recorder.callers == [CLIENT]
        write_federated(svids, ())  # federation removed: the open connection is refused too
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert f"trust domain {A!r}, which is not federated with {B!r}" in (
        caught.value.details() or ""
    )
    assert server.recorder.callers == [CLIENT]


async def test_a_channel_factory_picks_each_servers_trust_domain(
    cas: dict[str, CertificateAuthority], servers: list[grpc.aio.Server]
) -> None:
    """A gateway's pool dials its own domain and other domains' gateways through one factory:
    ``trust_domain_of`` names the trust domain of each address (TCP, as between hosts)."""
    cas[A].federate(cas[B].bundle)
    cas[B].federate(cas[A].bundle)
    local = await serve_tls(servers, None, CaSvidSource(cas[A], f"spiffe://{A}/registry/r",
                                                        [server_name(A)]))
    remote = await serve_tls(servers, None, CaSvidSource(cas[B], SERVER, [server_name(B)]))
    domains = {parse_address(remote.address).target: B}
    factory = SecureChannelFactory(CaSvidSource(cas[A], CLIENT),
                                   trust_domain_of=lambda a: domains.get(a.target))
    for server in (local, remote):
        async with factory(parse_address(server.address)) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
        assert server.recorder.callers == [CLIENT]


async def test_a_peer_whose_svid_comes_from_an_intermediate_of_its_root_is_accepted(
    tmp_path: Path, servers: list[grpc.aio.Server]
) -> None:
    """The server sees the intermediate the client sent (gRPC's x509_pem_cert_chain) and
    verifies the whole chain against the client's trust domain's root."""
    ca_a, sub_a = two_level_ca(A)
    ca_b = CertificateAuthority.create(B, now=time.time() - 3600)
    ca_b.federate(ca_a.bundle)
    leaf = sub_a.issue(CLIENT)
    svids = tmp_path / "client"  # the SVID with its intermediate, as a CA agent writes it
    write_svid(svids, Svid((leaf.leaf, sub_a.root), leaf.key), ca_a.bundle)
    write_federated(svids, (ca_b.bundle,))
    server = await serve_tls(servers, tmp_path / "b.sock",
                             CaSvidSource(ca_b, SERVER, [server_name(B)]))
    await check(server.address, FileSvidSource(svids), B)
    assert server.recorder.callers == [CLIENT]
