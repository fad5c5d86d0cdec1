"""Ownership across registry replicas (over one real etcd, callers over mTLS): the owner is
stored with the record, so an identity that did not register a record can neither replace nor
remove it through another replica, and the owner still can."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

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
async def started(ca: CertificateAuthority, etcd_url: str) -> AsyncIterator[list[Registry]]:
    running = []
    for _ in range(2):
        registry = Registry(open_store(etcd_url))
        source = CaSvidSource(ca, REGISTRY_ID, [server_name(TD)])
        await registry.start([parse_address("tcp://127.0.0.1:0")], False,
                             server_credentials(source))
        running.append(registry)
    yield running
    for registry in running:
        await registry.stop(grace=0.5)


@pytest.fixture
def replicas(started: list[Registry]) -> list[ListenAddress]:
    return [registry.addresses[0] for registry in started]


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


async def test_a_replica_behind_the_store_refuses_a_write_on_what_it_has_not_seen(
    started: list[Registry], replicas: list[ListenAddress], ca: CertificateAuthority
) -> None:
    """Replica b stops following (its cache is behind); alice registers through a; bob's
    register through b passes b's stale ownership check but is written only if the record is
    still as b saw it (absent): it is not, so nothing is written and bob gets UNAVAILABLE (try
    again); once b follows again, bob is refused as not the owner."""
    a, b = replicas
    behind: Any = started[1]
    behind._following.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await behind._following
    async with (
        secure_channel(a, CaSvidSource(ca, ALICE)) as alice_on_a,
        secure_channel(b, CaSvidSource(ca, BOB)) as bob_on_b,
    ):
        await register(alice_on_a, endpoint())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await register(bob_on_b, endpoint())
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "changed since revision 0" in (info.value.details() or "")
        behind._following = asyncio.create_task(behind.follower.run())
        async with asyncio.timeout(5):
            await behind.follower.reached(started[0].follower.revision)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await register(bob_on_b, endpoint())
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert await names(alice_on_a) == {"db-1"}
