"""mTLS against a real registry over TCP on 127.0.0.1: who gets in, who does not, rotation under a
live channel, ownership over the wire, and no secrets in the logs.

The registry is :class:`registry.app.Registry`'s chains with the security elements in front
(``Validate → AuthorizeRegistration → Ownership → ...``), served by ``sdk.grpcutil.serve`` with
``sdk.security.tls.server_credentials``.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import structlog

from api.proto import registry_pb2_grpc
from api.proto.registry_pb2 import (
    NetworkServiceEndpoint,
    NetworkServiceEndpointQuery,
)
from registry.app import Registry
from registry.store import open_store
from sdk.errors import FailedPrecondition
from sdk.grpcutil import ListenAddress, parse_address, serve, stop
from sdk.registry.core import RegistryChain
from sdk.registry.kinds import ENDPOINT, SERVICE
from sdk.registry.ownership import Ownership
from sdk.registry.server import add_registry
from sdk.registry.validate import Validate
from sdk.security.ca import CertificateAuthority
from sdk.security.policy import ALLOW_ALL, PolicySource, StaticPolicy, parse_policy
from sdk.security.registry_authorize import AuthorizeRegistration
from sdk.security.source import CaSvidSource, Material
from sdk.security.svid import Svid, TrustBundle
from sdk.security.tls import channel_credentials, secure_channel, server_credentials, server_name

TD = "example.org"
REGISTRY_ID = "spiffe://example.org/registry/main"
ALICE = "spiffe://example.org/nse/alice"
BOB = "spiffe://example.org/nse/bob"
WAIT = 5.0


@dataclass
class SecureRegistry:
    """A registry served over TCP with mTLS, and what a test needs to reach it."""

    registry: Registry
    ownership: Ownership[NetworkServiceEndpoint]
    source: CaSvidSource
    address: ListenAddress

    @property
    def target(self) -> str:
        return self.address.target


def secure_registry_chains(
    registry: Registry, policy: PolicySource
) -> Ownership[NetworkServiceEndpoint]:
    """Put the security elements in front of a Registry's own elements; returns the endpoint
    ownership element."""
    ownership: Ownership[NetworkServiceEndpoint] = Ownership(ENDPOINT)
    registry.services = RegistryChain([
        Validate(SERVICE), AuthorizeRegistration(policy), Ownership(SERVICE),
        registry.service_watch, registry.service_records,
    ])
    registry.endpoints = RegistryChain([
        Validate(ENDPOINT), AuthorizeRegistration(policy), ownership,
        registry.expire, registry.endpoint_watch, registry.endpoint_records,
    ])
    return ownership


@pytest.fixture
def ca() -> CertificateAuthority:
    """A CA whose root has been valid for a day (so SVIDs can be issued in the past)."""
    return CertificateAuthority.create(TD, now=time.time() - 86400)


StartSecure = Callable[..., Awaitable[SecureRegistry]]


@pytest.fixture
async def secure_registries(ca: CertificateAuthority) -> AsyncIterator[StartSecure]:
    """Factory: ``await secure_registries(policy=ALLOW_ALL)``; stopped at teardown."""
    running: list[tuple[grpc.aio.Server, list[ListenAddress], Registry]] = []

    async def start(policy: PolicySource = StaticPolicy(ALLOW_ALL)) -> SecureRegistry:
        registry = Registry(open_store("memory://"))
        ownership = secure_registry_chains(registry, policy)
        source = CaSvidSource(ca, REGISTRY_ID, [server_name(TD)])
        server = grpc.aio.server()
        add_registry(server, registry.services, registry.endpoints)
        bound = await serve(server, [parse_address("tcp://127.0.0.1:0")], False,
                            server_credentials(source))
        running.append((server, bound, registry))
        return SecureRegistry(registry, ownership, source, bound[0])

    yield start
    for server, bound, registry in running:
        registry.endpoint_watch.end_all()
        registry.service_watch.end_all()
        await stop(server, bound, 0.5)
        await registry.store.close()


@pytest.fixture
async def secure(secure_registries: StartSecure) -> SecureRegistry:
    return await secure_registries()


def endpoint(name: str = "db-1") -> NetworkServiceEndpoint:
    return NetworkServiceEndpoint(name=name, network_service_names=["secure-db"],
                                  url="tcp://10.0.0.1:5001")


def channel_for(
    target: str, svid: Svid | None, bundle: TrustBundle, name: str = server_name(TD)
) -> grpc.aio.Channel:
    """A TLS channel presenting ``svid`` (None: no client certificate) and trusting ``bundle``."""
    if svid is None:
        creds = grpc.ssl_channel_credentials(root_certificates=bundle.pem())
    else:
        creds = channel_credentials(Material(svid, bundle, 1))
    return grpc.aio.secure_channel(target, creds,
                                   options=[("grpc.ssl_target_name_override", name)])


async def register(channel: grpc.aio.Channel, record: NetworkServiceEndpoint) -> Any:
    stub: Any = registry_pb2_grpc.NetworkServiceEndpointRegistryStub(channel)
    return await stub.Register(record, timeout=WAIT)


async def unregister(channel: grpc.aio.Channel, record: NetworkServiceEndpoint) -> Any:
    stub: Any = registry_pb2_grpc.NetworkServiceEndpointRegistryStub(channel)
    return await stub.Unregister(record, timeout=WAIT)


async def names(channel: grpc.aio.Channel) -> set[str]:
    stub: Any = registry_pb2_grpc.NetworkServiceEndpointRegistryStub(channel)
    query = NetworkServiceEndpointQuery(network_service_endpoint=NetworkServiceEndpoint())
    return {r.network_service_endpoint.name async for r in stub.Find(query, timeout=WAIT)}


async def refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """The status of a Register that must fail; the channel is closed afterwards."""
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await register(channel, endpoint("intruder"))
    return info.value.code()


async def test_a_valid_svid_works_and_the_server_sees_its_spiffe_id(
    secure: SecureRegistry, ca: CertificateAuthority
) -> None:
    async with secure_channel(secure.address, CaSvidSource(ca, ALICE)) as channel:
        await register(channel, endpoint())
        assert await names(channel) == {"db-1"}
    assert secure.ownership.owner("db-1") == ALICE


async def test_a_client_certificate_from_a_foreign_ca_is_refused(
    secure: SecureRegistry, ca: CertificateAuthority
) -> None:
    foreign = CertificateAuthority.create(TD)  # same trust domain name, another root key
    evil = foreign.issue(ALICE)
    assert await refused(channel_for(secure.target, evil, ca.bundle)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    assert len(secure.registry.endpoint_records) == 0


async def test_a_client_without_a_certificate_is_refused(
    secure: SecureRegistry, ca: CertificateAuthority
) -> None:
    assert await refused(channel_for(secure.target, None, ca.bundle)) == (
        grpc.StatusCode.UNAVAILABLE
    )


async def test_an_expired_client_svid_is_refused(
    secure: SecureRegistry, ca: CertificateAuthority
) -> None:
    expired = ca.issue(ALICE, ttl=60, now=time.time() - 3600)
    assert expired.not_after < time.time()
    assert await refused(channel_for(secure.target, expired, ca.bundle)) == (
        grpc.StatusCode.UNAVAILABLE
    )


async def test_a_client_that_does_not_trust_the_server_gives_up(
    secure: SecureRegistry, ca: CertificateAuthority
) -> None:
    other = CertificateAuthority.create(TD)
    assert await refused(channel_for(secure.target, other.issue(ALICE), other.bundle)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    # ... and one that expects another server name does too.
    assert await refused(
        channel_for(secure.target, ca.issue(ALICE), ca.bundle, name="other.example.org")
    ) == grpc.StatusCode.UNAVAILABLE


async def test_plain_tcp_needs_credentials_or_the_insecure_flag() -> None:
    server = grpc.aio.server()
    with pytest.raises(FailedPrecondition, match="need mTLS credentials"):
        await serve(server, [parse_address("tcp://127.0.0.1:0")], False)


async def test_rotation_under_a_live_channel_keeps_calls_working(
    secure: SecureRegistry, ca: CertificateAuthority
) -> None:
    alice = CaSvidSource(ca, ALICE)
    async with secure_channel(secure.address, alice) as live:
        await register(live, endpoint("before"))
        first_generation = secure.source.generation

        ca.rotate_root()  # the server's source notices the new root and issues itself a new SVID
        assert secure.source.current().generation == first_generation + 1

        await register(live, endpoint("during"))  # the live channel keeps working
        # A client that trusts only the new root can connect: the server presents its new SVID.
        new_only = TrustBundle(TD, (ca.root,))
        async with channel_for(secure.target, ca.issue(BOB), new_only) as fresh:
            await register(fresh, endpoint("after"))
        # A client still holding an SVID of the old root is accepted during the change-over.
        async with channel_for(secure.target, alice.current().svid, ca.bundle) as old:
            assert await names(old) == {"before", "during", "after"}
        await register(live, endpoint("before"))  # the owner refreshes over the old channel


async def test_only_the_owner_may_change_or_unregister_over_the_wire(
    secure: SecureRegistry, ca: CertificateAuthority
) -> None:
    async with (
        secure_channel(secure.address, CaSvidSource(ca, ALICE)) as alice,
        secure_channel(secure.address, CaSvidSource(ca, BOB)) as bob,
    ):
        await register(alice, endpoint())
        for call in (register, unregister):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(bob, endpoint())
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert f"belongs to {ALICE}" in (info.value.details() or "")
        await unregister(alice, endpoint())
        assert await names(bob) == set()


async def test_registration_policy_over_the_wire(
    secure_registries: StartSecure, ca: CertificateAuthority
) -> None:
    policy = StaticPolicy(parse_policy(
        f"registrations: [{{rule: alice-db, services: [secure-db], endpoints: ['{ALICE}']}}]"
    ))
    secure = await secure_registries(policy)
    async with secure_channel(secure.address, CaSvidSource(ca, BOB)) as bob:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await register(bob, endpoint())
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"no rule allows {BOB} to register 'secure-db'" in (info.value.details() or "")
    async with secure_channel(secure.address, CaSvidSource(ca, ALICE)) as alice:
        await register(alice, endpoint())


async def test_logs_never_carry_private_keys_or_tokens(
    secure: SecureRegistry, ca: CertificateAuthority, capfd: pytest.CaptureFixture[str]
) -> None:
    from sdk.security import token

    alice = CaSvidSource(ca, ALICE)
    secrets: list[str] = []
    with structlog.testing.capture_logs() as logs:
        async with secure_channel(secure.address, alice) as channel:
            await register(channel, endpoint())
            alice.rotate()
            ca.rotate_root()
            secure.source.current()
            async with secure_channel(secure.address, alice) as bob_like:
                with pytest.raises(grpc.aio.AioRpcError):
                    await register(bob_like, NetworkServiceEndpoint(name="BAD NAME"))
        for material in (alice.current(), secure.source.current()):
            secrets.append(material.svid.key_pem().decode())
            tok, _ = token.sign(material.svid, REGISTRY_ID, "seg")
            secrets.append(tok)
            try:
                token.verify(tok, material.bundle, audience="someone else")
            except Exception as exc:
                structlog.get_logger("test").warning("refused", error=str(exc))
    out, err = capfd.readouterr()
    text = "\n".join([repr(logs), out, err])
    assert logs, "the flows above must have logged something"
    assert "PRIVATE KEY" not in text
    for secret in secrets:
        for line in secret.splitlines():
            if len(line) > 20 and not line.startswith("-----"):
                assert line not in text
        for part in re.split(r"[.]", secret):
            if len(part) > 40:
                assert part not in text
