"""The channel pool against a real peer that dies and comes back on the same TCP port: after
``forget``, the next call reaches the restarted peer at once, over mTLS and in plain text.

Channels of equal arguments share one connection in gRPC, and equal credentials count as equal;
a channel made anew would then inherit the dead connection's reconnect back-off and fail with
its "connection refused" although the peer listens again (a gateway restarted in a CI run:
the next request through it failed).
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from api.proto import registry_pb2_grpc
from api.proto.registry_pb2 import NetworkServiceEndpoint
from registry.app import Registry
from registry.store import open_store
from sdk.channels import ChannelFactory, ChannelPool, insecure_factory
from sdk.errors import Unavailable
from sdk.grpcutil import ListenAddress, fabric_error, parse_address, serve, stop
from sdk.registry.server import add_registry
from sdk.security.ca import CertificateAuthority
from sdk.security.source import CaSvidSource
from sdk.security.tls import SecureChannelFactory, server_credentials, server_name

TD = "example.org"
WAIT = 5.0



def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Peer:
    """A registry on one fixed TCP port that can be stopped and started again."""

    def __init__(self, source: CaSvidSource | None) -> None:
        self.address = parse_address(f"tcp://127.0.0.1:{_free_port()}")
        self.source = source  # None: plain text
        self._running: tuple[grpc.aio.Server, list[ListenAddress], Registry] | None = None

    async def start(self) -> None:
        registry = Registry(open_store("memory://"))
        server = grpc.aio.server()
        add_registry(server, registry.services, registry.endpoints)
        credentials = server_credentials(self.source) if self.source else None
        bound = await serve(server, [self.address], credentials is None, credentials)
        self._running = (server, bound, registry)

    async def stop(self) -> None:
        if self._running is None:
            return
        server, bound, registry = self._running
        self._running = None
        registry.endpoint_watch.end_all()
        await stop(server, bound, 0.2)
        await registry.store.close()


async def _register(pool: ChannelPool, url: str) -> None:
    stub = registry_pb2_grpc.NetworkServiceEndpointRegistryStub(pool.get(url))
    record = NetworkServiceEndpoint(name="probe", network_service_names=["probe"],
                                    url="tcp://10.0.0.1:5001")
    try:
        await stub.Register(record, timeout=WAIT)
    except grpc.aio.AioRpcError as exc:
        raise fabric_error(exc) from None


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TD, now=time.time() - 86400)


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for peer in made:
        await peer.stop()


@pytest.mark.parametrize("mtls", [True, False], ids=["mtls", "plain"])
async def test_a_forgotten_channel_reaches_the_restarted_peer_at_once(
    mtls: bool, ca: CertificateAuthority, peers: list[Peer]
) -> None:
    server_source = CaSvidSource(ca, f"spiffe://{TD}/registry/main", [server_name(TD)])
    client_source = CaSvidSource(ca, f"spiffe://{TD}/gateway/a")
    peer = Peer(server_source if mtls else None)
    peers.append(peer)
    factory: ChannelFactory = SecureChannelFactory(client_source) if mtls else insecure_factory
    pool = ChannelPool(factory)
    url = peer.address.url
    try:
        await peer.start()
        await _register(pool, url)

        await peer.stop()
        for _ in range(3):  # the connection fails and backs off
            with pytest.raises(Unavailable):
                await _register(pool, url)

        await peer.start()
        pool.forget(url)
        await _register(pool, url)  # no wait_for_ready: a fresh channel dials at once
    finally:
        await pool.close()
