"""The registry across restarts and as a process: SQLite persistence through a clean stop and
through SIGKILL of ``python -m registry``, and a graceful SIGTERM with an open watch stream."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from tests.integration.conftest import (
    WAIT,
    StartRegistry,
    endpoint_stub,
    endpoint_watcher,
    find_endpoints,
    find_services,
    ns,
    nse,
    service_stub,
)

#: Seconds a short-lived record lives in the persistence tests.
SHORT = 0.5


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"  # absolute path: four slashes in total


async def register_mixed(ch: grpc.aio.Channel) -> float:
    """Register a long-lived endpoint, a short-lived one and a service; returns the instant the
    short one expires at."""
    await endpoint_stub(ch).Register(nse("long", ["svc"], expires_in=600), timeout=WAIT)
    reply = await endpoint_stub(ch).Register(nse("short", ["svc"], expires_in=SHORT), timeout=WAIT)
    await service_stub(ch).Register(ns("svc"), timeout=WAIT)
    return float(reply.expiration_time.ToNanoseconds()) / 1e9


async def until(instant: float) -> None:
    """Let wall-clock time pass until ``instant`` (what expiry is about; bounded by SHORT)."""
    await asyncio.sleep(max(0.0, min(instant - time.time(), SHORT) + 0.01))


async def assert_survivors(registries: StartRegistry, store: str) -> None:
    """A new registry on ``store`` has the long-lived records and not the expired one."""
    running = await registries(store=store)
    async with grpc.aio.insecure_channel(running.target()) as ch:
        found = await find_endpoints(endpoint_stub(ch))
        assert set(found) == {"long"}
        assert list(found["long"].network_service_names) == ["svc"]
        assert set(await find_services(service_stub(ch))) == {"svc"}


@asynccontextmanager
async def registry_process(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``python -m registry ARGS`` until it logs that it serves; kill it if still running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "registry", "--log-level", "info", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(15):
            while True:
                line = await proc.stderr.readline()
                assert line, f"registry exited before serving (status {await proc.wait()})"
                if b"registry serving" in line:
                    assert json.loads(line)["event"] == "registry serving"
                    break
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def test_sqlite_records_survive_restart(registries: StartRegistry, tmp_path: Path) -> None:
    store = sqlite_url(tmp_path / "registry.db")
    first = await registries(store=store)
    async with grpc.aio.insecure_channel(first.target()) as ch:
        short_expiry = await register_mixed(ch)
        await endpoint_stub(ch).Register(nse("removed", ["svc"]), timeout=WAIT)
        await endpoint_stub(ch).Unregister(nse("removed"), timeout=WAIT)
    await first.registry.stop()
    await until(short_expiry)
    await assert_survivors(registries, store)


async def test_sqlite_records_survive_sigkill(
    registries: StartRegistry, tmp_path: Path, short_tmp: Path
) -> None:
    store = sqlite_url(tmp_path / "registry.db")
    sock = short_tmp / "proc.sock"
    async with registry_process("--listen", f"unix://{sock}", "--store", store) as proc:
        async with grpc.aio.insecure_channel(f"unix://{sock}") as ch:
            short_expiry = await register_mixed(ch)
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), WAIT) == -signal.SIGKILL
    await until(short_expiry)
    await assert_survivors(registries, store)


async def test_sigterm_ends_watches_and_exits_cleanly(short_tmp: Path) -> None:
    sock = short_tmp / "proc.sock"
    async with registry_process("--listen", f"unix://{sock}", "--store", "memory://") as proc:
        async with grpc.aio.insecure_channel(f"unix://{sock}") as ch:
            stub = endpoint_stub(ch)
            await stub.Register(nse("nse-1", ["svc"]), timeout=WAIT)
            watcher = endpoint_watcher(stub)
            try:
                # The watch is open server-side once its initial state arrived.
                assert (await watcher.next()).network_service_endpoint.name == "nse-1"
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                assert await watcher.until_end() == grpc.StatusCode.OK
            finally:
                watcher.close()
        assert await asyncio.wait_for(proc.wait(), 5.0) == 0
        assert time.monotonic() - started < 5.0
        assert not os.path.exists(sock), "the socket file must be removed on exit"
