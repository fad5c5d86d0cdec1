"""Ownership across registry replicas (over one real etcd, callers over mTLS): the owner is
stored with the record, so an identity that did not register a record can neither replace nor
remove it through another replica, and the owner still can."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from registry.app import Registry
from registry.store import open_store
from sdk.grpcutil import ListenAddress, parse_address
from sdk.security.ca import CertificateAuthority
from sdk.security.source import CaSvidSource
from sdk.security.tls import secure_channel, server_credentials, server_name
from tests.integration.test_security_mtls import (
    ALICE,
    BOB,
    REGISTRY_ID,
    TD,
    endpoint,
    names,
    register,
    unregister,
)


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TD)


@pytest.fixture
async def replicas(ca: CertificateAuthority, etcd_url: str) -> AsyncIterator[list[ListenAddress]]:
    started = []
    for _ in range(2):
        registry = Registry(open_store(etcd_url))
        source = CaSvidSource(ca, REGISTRY_ID, [server_name(TD)])
        await registry.start([parse_address("tcp://127.0.0.1:0")], False,
                             server_credentials(source))
        started.append(registry)
    yield [registry.addresses[0] for registry in started]
    for registry in started:
        await registry.stop(grace=0.5)


async def test_only_the_owner_may_change_a_record_through_any_replica(
    replicas: list[ListenAddress], ca: CertificateAuthority
) -> None:
    a, b = replicas
    async with (
        secure_channel(a, CaSvidSource(ca, ALICE)) as alice_on_a,
        secure_channel(b, CaSvidSource(ca, BOB)) as bob_on_b,
        secure_channel(b, CaSvidSource(ca, ALICE)) as alice_on_b,
    ):
        await register(alice_on_a, endpoint())
        for call in (register, unregister):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(bob_on_b, endpoint())
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert f"belongs to {ALICE}" in (info.value.details() or "")
        assert await names(bob_on_b) == {"db-1"}
        await unregister(alice_on_b, endpoint())  # the owner, through the other replica
        assert await names(bob_on_b) == set()
