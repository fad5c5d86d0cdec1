"""The node agent's server and nsc's agent SVID source, in process (no namespaces).

The resolver is a stand-in (this test process is "in pod web"); the real attestation by network
namespace is tested in tests/privileged/test_agent.py. Proved here: renewal at half-life with the
key only in memory, refusal of a caller that exited before it was attested (its pid could be
reused), garbage on the socket answered with an error and no crash, settings checked.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent.__main__ import _parser, build
from agent.attest import Peer, Pod, attest
from agent.server import AgentServer
from agent.settings import PREFIX, AgentSettings
from nsc.identity import svid_source
from sdk import settings
from sdk.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from sdk.security.ca import CertificateAuthority
from sdk.security.workload import AgentSvidSource, decode_length, fetch

TD = "unit.vwire"


class OnlyMe:
    """This test process is pod ``web`` of namespace ``shop``; nothing else is a pod."""

    def pod_of(self, pid: int) -> Pod | None:
        return Pod("web", "shop", "frontend") if pid == os.getpid() else None


async def _serve(tmp_path: Path, ttl: float = 60.0) -> AgentServer:
    server = AgentServer(tmp_path / "a" / "agent.sock", CertificateAuthority.create(TD),
                         OnlyMe(), ttl, nsmgr_id=f"spiffe://{TD}/nsmgr/n1")
    await server.start()
    return server


async def test_source_renews_at_half_life_in_memory(tmp_path: Path) -> None:
    server = await _serve(tmp_path, ttl=100.0)
    now = [1_000.0]
    try:
        source = await asyncio.to_thread(AgentSvidSource, f"unix://{server.path}",
                                         clock=lambda: now[0])
        first = source.current()
        assert str(first.spiffe_id) == f"spiffe://{TD}/ns/shop/sa/frontend"
        assert source.hints == {"nsmgr_id": f"spiffe://{TD}/nsmgr/n1"}
        assert source.current() is first  # before half-life: no new request
        now[0] = source.renew_at + 1
        second = await asyncio.to_thread(source.current)
        assert second.generation == 2 and second.svid.serial != first.svid.serial
        assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "agent.sock"]  # no key file
    finally:
        await server.stop()
    assert not server.path.exists()


async def test_failed_renewal_keeps_the_svid_until_it_expires(tmp_path: Path) -> None:
    server = await _serve(tmp_path, ttl=100.0)
    now = [1_000.0]
    source = await asyncio.to_thread(AgentSvidSource, f"unix://{server.path}",
                                     clock=lambda: now[0])
    first = source.current()
    await server.stop()  # the agent is gone
    now[0] = source.renew_at + 1
    assert await asyncio.to_thread(source.current) is first
    now[0] = first.svid.not_after + 1
    with pytest.raises(Exception, match="expired"):
        await asyncio.to_thread(source.current)


def test_caller_that_exited_before_attestation_is_refused() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    pidfd = os.pidfd_open(child.pid)
    child.wait()

    class Anyone:
        def pod_of(self, pid: int) -> Pod | None:
            return Pod("web", "shop", "frontend")  # a later process reusing the pid would match

    try:
        with pytest.raises(PermissionDenied, match="exited before"):
            attest(Peer(child.pid, 0, 0, pidfd), Anyone())
    finally:
        os.close(pidfd)


async def test_refused_and_garbage_requests_get_an_error_answer(tmp_path: Path) -> None:
    server = await _serve(tmp_path)

    class NoOne:
        def pod_of(self, pid: int) -> Pod | None:
            return None

    try:
        for garbage in (b"\x00\x00\x00\x05hello", b"\xff\xff\xff\xff", b"\x00\x00\x00\x02{}"):
            answer = await asyncio.to_thread(_raw, server.path, garbage)
            assert '"error"' in answer and "key_pem" not in answer
        server.pods = NoOne()
        with pytest.raises(PermissionDenied, match="runs in no pod"):
            await asyncio.to_thread(fetch, str(server.path))
    finally:
        await server.stop()


def _raw(path: Path, data: bytes) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(data)
        size = decode_length(sock.recv(4, socket.MSG_WAITALL))
        return sock.recv(size, socket.MSG_WAITALL).decode()


def test_settings_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgument, match="pods"):
        build(AgentSettings(ca_dir=str(tmp_path)))
    CertificateAuthority.init(tmp_path / "ca", TD)
    with pytest.raises(InvalidArgument, match="pods"):
        build(AgentSettings(ca_dir=str(tmp_path / "ca"), pods="lab:relative"))
    monkeypatch.delenv("NODE_NAME", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(FailedPrecondition, match="needs this node's name: set NODE_NAME"):
        build(AgentSettings(ca_dir=str(tmp_path / "ca"), pods="kubernetes"))
    with pytest.raises(FailedPrecondition, match="KUBERNETES_SERVICE_HOST is not set"):
        build(AgentSettings(ca_dir=str(tmp_path / "ca"), pods="kubernetes:node-a"))
    assert build(AgentSettings(ca_dir=str(tmp_path / "ca"), pods=f"lab:{tmp_path}"))


def test_every_setting_is_a_documented_flag() -> None:
    flat = " ".join(_parser().format_help().split())
    for option in settings.options(AgentSettings, PREFIX):
        assert f"{option.flag} " in flat and flat.count(f"[{option.env}]") == 1, option.flag
    assert "(default: )" not in flat


def test_nsc_without_an_agent_signs_nothing(tmp_path: Path) -> None:
    assert svid_source("", f"unix://{tmp_path}/absent.sock", "x") == (None, "x")
