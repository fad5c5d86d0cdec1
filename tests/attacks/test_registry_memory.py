"""Unbounded registry memory (issue 12, item 7): a never-read watch stream while ~1 MB records
pour in, and one identity registering without end.

The watch test runs a real registry in-process (real gRPC on a unix socket) so that it can read
the registry's own accounting of queued bytes rather than the process's RSS; the quota test runs
``python -m registry`` as a process with mTLS, configured through its environment as an operator
would.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from api.proto import registry_pb2_grpc
from api.proto.registry_pb2 import (
    Destination,
    Match,
    NetworkService,
    NetworkServiceEndpoint,
    NetworkServiceEndpointQuery,
    NetworkServiceQuery,
)
from registry.app import Registry
from registry.store import open_store
from sdk.grpcutil import parse_address
from sdk.security.ca import CertificateAuthority
from sdk.security.source import CaSvidSource
from sdk.security.svid import write_svid
from sdk.security.tls import secure_channel, server_name

WAIT = 10.0
#: The registry's default watch backlog limit (VWIRE_REGISTRY_WATCH_BACKLOG_BYTES).
DEFAULT_BACKLOG_BYTES = 32 * 1024 * 1024
TD = "example.org"


def big_service(name: str, size: int = 950_000) -> NetworkService:
    """A valid NetworkService of about ``size`` bytes (labels in match routes)."""
    labels = {f"k{i:02d}-{'x' * 56}": "v" * 63 for i in range(64)}
    record = NetworkService(name=name, payload="IP")
    while record.ByteSize() < size:
        match = record.matches.add() if not record.matches or len(
            record.matches[-1].routes) >= 16 else record.matches[-1]
        match.routes.append(Destination(destination_selector=labels))
    assert isinstance(record.matches[0], Match)
    return record


@pytest.fixture
async def registry() -> AsyncIterator[tuple[Registry, grpc.aio.Channel]]:
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="vwt-mem-") as tmp:
        found = Registry(open_store("memory://"))
        await found.start([parse_address(f"unix://{tmp}/r.sock")])
        channel = grpc.aio.insecure_channel(f"unix:{tmp}/r.sock")
        try:
            yield found, channel
        finally:
            await channel.close()
            await found.stop(grace=0)


async def test_a_never_read_watch_is_cut_at_its_byte_limit(
    registry: tuple[Registry, grpc.aio.Channel]
) -> None:
    server, ch = registry
    stub: Any = registry_pb2_grpc.NetworkServiceRegistryStub(ch)
    call = stub.Find(NetworkServiceQuery(network_service=NetworkService(), watch=True))
    await stub.Register(NetworkService(name="probe"), timeout=WAIT)
    first = await asyncio.wait_for(call.read(), WAIT)  # listed or watched: subscribed now
    assert first.network_service.name == "probe" and server.service_watch.watchers == 1
    record_size = big_service("probe").ByteSize()
    count = DEFAULT_BACKLOG_BYTES // record_size + 16  # past the limit, whatever gRPC buffers
    peak = 0
    for i in range(count):
        await stub.Register(big_service(f"big-{i}"), timeout=WAIT)
        peak = max(peak, server.service_watch.queued_bytes)
    assert server.service_watch.watchers == 0, "the slow watcher is still subscribed"
    assert server.service_watch.queued_bytes == 0, "the cut watcher's backlog was kept"
    assert peak <= DEFAULT_BACKLOG_BYTES
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async with asyncio.timeout(WAIT):
            while await call.read() is not grpc.aio.EOF:
                pass
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = err.value.details() or ""
    assert f"{DEFAULT_BACKLOG_BYTES} bytes" in details and "Find again" in details
    # the registry keeps serving: a new watch gets the current records
    again = stub.Find(NetworkServiceQuery(network_service=NetworkService(name="big-0"),
                                          watch=True))
    first = await asyncio.wait_for(again.read(), WAIT)
    assert first.network_service.name == "big-0"
    again.cancel()


@asynccontextmanager
async def registry_process(
    tmp: Path, ca: CertificateAuthority, **env: str
) -> AsyncIterator[str]:
    """``python -m registry`` on TCP 127.0.0.1 with mTLS; yields its address."""
    svids = tmp / "registry-svid"
    write_svid(svids, ca.issue(f"spiffe://{TD}/registry/main", [server_name(TD)]), ca.bundle)
    environment = {**os.environ, **env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "registry", "--listen", "tcp://127.0.0.1:0",
        "--store", "memory://", "--svid-dir", str(svids),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=environment,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(20):
            while True:
                line = await proc.stderr.readline()
                assert line, f"registry exited before serving (status {await proc.wait()})"
                if b"registry serving" in line:
                    address = json.loads(line)["listen"][0]
                    break
        yield address
    finally:
        if proc.returncode is None:
            proc.terminate()
            async with asyncio.timeout(10):
                await proc.wait()


async def test_one_identity_cannot_fill_the_registry() -> None:
    ca = CertificateAuthority.create(TD, now=time.time() - 3600)
    hog, other = (CaSvidSource(ca, f"spiffe://{TD}/nsmgr/{n}") for n in ("hog", "other"))
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="vwt-quota-") as tmp:
        async with registry_process(Path(tmp), ca,
                                    VWIRE_REGISTRY_MAX_RECORDS_PER_IDENTITY="3",
                                    VWIRE_REGISTRY_MAX_BYTES_PER_IDENTITY="2000000") as address:
            async with secure_channel(address, hog) as ch:
                endpoints: Any = registry_pb2_grpc.NetworkServiceEndpointRegistryStub(ch)
                services: Any = registry_pb2_grpc.NetworkServiceRegistryStub(ch)
                for i in range(3):
                    await endpoints.Register(NetworkServiceEndpoint(
                        name=f"e{i}", url="tcp://10.0.0.1:1", network_service_names=["db"]),
                        timeout=WAIT)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await endpoints.Register(NetworkServiceEndpoint(
                        name="e3", url="tcp://10.0.0.1:1", network_service_names=["db"]),
                        timeout=WAIT)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                details = err.value.details() or ""
                assert "quota is 3 records" in details
                assert "VWIRE_REGISTRY_MAX_RECORDS_PER_IDENTITY" in details
                # a refresh of an own record is not a new record
                await endpoints.Register(NetworkServiceEndpoint(
                    name="e0", url="tcp://10.0.0.1:2", network_service_names=["db"]),
                    timeout=WAIT)

                await services.Register(big_service("big-0"), timeout=WAIT)
                await services.Register(big_service("big-1"), timeout=WAIT)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await services.Register(big_service("big-2"), timeout=WAIT)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "quota is 2000000 bytes" in (err.value.details() or "")

                query = NetworkServiceEndpointQuery(
                    network_service_endpoint=NetworkServiceEndpoint())
                names = {r.network_service_endpoint.name
                         async for r in endpoints.Find(query, timeout=WAIT)}
                assert names == {"e0", "e1", "e2"}  # nothing of the refused calls stored
                found = {r.network_service.name async for r in services.Find(
                    NetworkServiceQuery(network_service=NetworkService()), timeout=WAIT)}
                assert found == {"big-0", "big-1"}

                # freeing a record frees quota
                await endpoints.Unregister(NetworkServiceEndpoint(name="e1"), timeout=WAIT)
                await endpoints.Register(NetworkServiceEndpoint(
                    name="e3", url="tcp://10.0.0.1:1", network_service_names=["db"]),
                    timeout=WAIT)

            async with secure_channel(address, other) as ch:  # others are not affected
                endpoints = registry_pb2_grpc.NetworkServiceEndpointRegistryStub(ch)
                await endpoints.Register(NetworkServiceEndpoint(
                    name="o0", url="tcp://10.0.0.2:1", network_service_names=["db"]),
                    timeout=WAIT)
