"""File and log hygiene (issue 12, item 10), with the real CA, real files and a real registry
process: SVID directories others could tamper with are refused, a node without a policy file
says so loudly (startup log and ``nsmctl check``), and a malformed protobuf message costs one
log line, not a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from nsmctl.app import main as nsmctl
from sdk.errors import FailedPrecondition
from sdk.security.ca import CertificateAuthority
from sdk.security.policy import load_policy
from sdk.security.source import FileSvidSource
from sdk.security.svid import BUNDLE_FILE, KEY_FILE, write_svid
from tests.integration.background import BackgroundLoop

TD = "example.org"
EXAMPLE_POLICY = Path(__file__).parents[2] / "docs" / "examples" / "policy.yaml"
NOBODY = 65534


@pytest.fixture
def svid_dir(tmp_path: Path) -> Path:
    ca = CertificateAuthority.init(tmp_path / "ca", TD)
    directory = tmp_path / "ids" / "nsmgr"
    write_svid(directory, ca.issue(f"spiffe://{TD}/nsmgr/n1", [f"vwire.{TD}"]), ca.bundle)
    return directory


def test_a_tidy_svid_directory_loads(svid_dir: Path) -> None:
    assert str(FileSvidSource(svid_dir).current().spiffe_id) == f"spiffe://{TD}/nsmgr/n1"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_readable_by_others_is_refused(svid_dir: Path, mode: int) -> None:
    key = svid_dir / KEY_FILE
    key.chmod(mode)
    with pytest.raises(FailedPrecondition) as failure:
        FileSvidSource(svid_dir)
    assert str(failure.value) == (
        f"{key} is readable by group or others (mode {mode:04o}): chmod 600 {key}, and "
        "re-issue the SVID ('nsmctl ca issue'), since its key may have leaked"
    )


@pytest.mark.parametrize("target", [BUNDLE_FILE, "."])
@pytest.mark.parametrize("mode", [0o666, 0o664])
def test_a_bundle_or_directory_others_can_write_is_refused(
    svid_dir: Path, target: str, mode: int
) -> None:
    path = svid_dir if target == "." else svid_dir / target
    path.chmod(mode | (0o111 if target == "." else 0))
    with pytest.raises(FailedPrecondition, match=r"writable by group or others .*chmod go-w"):
        FileSvidSource(svid_dir)


def test_a_bundle_owned_by_another_user_is_refused(svid_dir: Path) -> None:
    os.chown(svid_dir / BUNDLE_FILE, NOBODY, NOBODY)
    with pytest.raises(FailedPrecondition, match=rf"owned by uid {NOBODY}.*chown {os.geteuid()}"):
        FileSvidSource(svid_dir)


def test_a_bundle_made_writable_later_is_not_trusted(svid_dir: Path, tmp_path: Path) -> None:
    """After start, a bundle swapped in through a world-writable file is ignored: the source
    keeps the material it had (and logs why)."""
    source = FileSvidSource(svid_dir, poll=0.0)  # re-checks the files on every current()
    trusted = source.current().bundle
    rogue = CertificateAuthority.create(TD)
    bundle = svid_dir / BUNDLE_FILE
    bundle.chmod(0o666)
    bundle.write_bytes(rogue.bundle.pem())
    with structlog.testing.capture_logs() as logs:
        assert source.current().bundle == trusted
    assert any("writable by group or others" in str(e.get("error")) for e in logs), logs


def test_no_policy_file_is_said_loudly_at_start() -> None:
    with structlog.testing.capture_logs() as logs:
        load_policy(None)
    (line,) = logs
    assert line["log_level"] == "warning"
    assert line["event"].startswith("AUTHORIZATION IS OFF: no policy file")
    assert "--policy FILE" in line["fix"]


@pytest.fixture
def background() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop("hygiene-health")
    yield loop
    loop.close()


def test_nsmctl_check_says_when_authorization_is_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], background: BackgroundLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VWIRE_NSMGR_POLICY", raising=False)
    base = ["--registry", f"unix://{tmp_path}/none.sock", "--timeout", "2", "check",
            "--nsmgr", f"unix://{tmp_path}/none-nsmgr.sock"]
    assert nsmctl(base) == 1  # nothing runs here
    out, err = capsys.readouterr()
    assert "WARN authorization: OFF: no policy file, so every client may request" in out
    assert "WARNING: authorization is OFF on this node" in err

    assert nsmctl([*base, "--policy", str(EXAMPLE_POLICY)]) == 1
    assert f"ok   authorization: {EXAMPLE_POLICY}: 2 request and 2 registration rules" in (
        capsys.readouterr().out)

    broken = tmp_path / "broken.yaml"
    broken.write_text("requests: [{rule: x}]\n")
    assert nsmctl([*base, "--policy", str(broken)]) == 1
    assert "FAIL authorization: policy file" in capsys.readouterr().out

    # An nsmgr that reports its own state (gRPC health of "vwire.authorization") is believed
    # over the local file.
    sock = tmp_path / "nsmgr.sock"

    async def start() -> grpc.aio.Server:
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await servicer.set("vwire.authorization", health_pb2.HealthCheckResponse.NOT_SERVING)
        server.add_insecure_port(f"unix://{sock}")
        await server.start()
        return server

    server = background.run(start())
    try:
        args = ["--registry", f"unix://{tmp_path}/none.sock", "--timeout", "2", "check",
                "--nsmgr", f"unix://{sock}", "--policy", str(EXAMPLE_POLICY)]
        assert nsmctl(args) == 1
        assert f"WARN authorization: OFF: unix://{sock} reports no policy file" in (
            capsys.readouterr().out)
    finally:
        background.run(server.stop(0))


async def test_a_malformed_message_is_one_log_line(tmp_path: Path) -> None:
    """A real ``python -m registry`` without a policy: its start-up log says authorization is
    off, and garbage sent as a Register body is answered and logged as one line."""
    sock = Path(f"/tmp/vwt-{os.getpid()}-hygiene.sock")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "registry", "--log-level", "info", "--listen", f"unix://{sock}",
        "--store", "memory://",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[bytes] = []
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(15):
            while not lines or b"registry serving" not in lines[-1]:
                lines.append(await proc.stderr.readline())
                assert lines[-1], f"registry exited (status {await proc.wait()}): {lines}"
        async with grpc.aio.insecure_channel(f"unix://{sock}") as ch:
            register = ch.unary_unary("/registry.NetworkServiceEndpointRegistry/Register")
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as failure:
                    await register(b"\xff\xff\xff\x07not a protobuf", timeout=5)
                assert failure.value.code() == grpc.StatusCode.UNKNOWN
        proc.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
        sock.unlink(missing_ok=True)
    log = b"".join(lines).decode() + rest.decode()
    assert "Traceback" not in log, log
    malformed = [line for line in log.splitlines() if "malformed request" in line]
    assert malformed == [
        "WARNING:grpc._cython.cygrpc:malformed request to "
        "/registry.NetworkServiceEndpointRegistry/Register refused: Error parsing message with "
        "type 'registry.NetworkServiceEndpoint': Wire format was corrupt"
    ] * 3, log
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    off = [e for e in events if e["event"].startswith("AUTHORIZATION IS OFF")]
    assert off and off[0]["level"] == "warning", events
