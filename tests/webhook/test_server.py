"""``/mutate`` and ``/ready`` over real HTTPS (the server thread, a real TLS client checking the
certificate the built-in CA issued for ``svc.ns.svc``), the certificate reloaded when rotated,
and ``python -m webhook`` as a process that stops on SIGTERM and leaves nothing behind."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sdk.security.ca import CertificateAuthority
from sdk.security.svid import write_svid
from tests.https_stub import serving
from tests.webhook import reviews
from tests.webhook.conftest import patched, validate
from webhook.inject import InjectConfig
from webhook.namespaces import FileNamespaces
from webhook.server import Certificates, WebhookServer

DNS = "vwire-webhook.vwire-system.svc"
URL = "kernel://secure-db/nsm-1?app=web"


def issue(ca: CertificateAuthority, out: Path) -> None:
    write_svid(out, ca.issue("spiffe://example.org/webhook/vwire-webhook",
                             [DNS, "vwire-webhook.vwire-system"], 3600), ca.bundle)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "ca", "example.org")


@pytest.fixture
def served(tmp_path: Path, ca: CertificateAuthority) -> Iterator[tuple[int, Path]]:
    issue(ca, tmp_path / "svid")
    namespaces = tmp_path / "namespaces.yaml"
    namespaces.write_text("meshed:\n  annotations:\n    networkservicemesh.io: kernel://cache\n")
    certificates = Certificates(tmp_path / "svid" / "svid.crt", tmp_path / "svid" / "svid.key",
                                recheck=0.0)
    server = WebhookServer(("127.0.0.1", 0), certificates, InjectConfig(),
                           FileNamespaces(namespaces))
    with serving(server) as port:
        yield port, tmp_path


def client(port: int, bundle: Path) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(bundle))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    conn.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                    server_hostname=DNS)
    return conn


def post(conn: http.client.HTTPSConnection, body: bytes) -> tuple[int, Any]:
    conn.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json"})
    reply = conn.getresponse()
    return reply.status, json.loads(reply.read())


def test_mutate_over_https_with_a_verified_certificate(served: tuple[int, Path]) -> None:
    port, root = served
    conn = client(port, root / "svid" / "bundle.pem")
    doc = reviews.workload("Deployment", template_annotation=URL)
    status, answer = post(conn, json.dumps(doc).encode())
    assert status == 200 and answer["response"]["allowed"] is True
    validate(patched(doc, answer))
    # the same connection (HTTP/1.1 keep-alive, as the API server does) serves the next one
    doc = reviews.pod(namespace="meshed", name="web")
    status, answer = post(conn, json.dumps(doc).encode())
    assert status == 200 and "patch" in answer["response"]  # the file's namespace annotation
    conn.request("GET", "/ready")
    reply = conn.getresponse()
    assert reply.status == 200 and json.loads(reply.read()) == {"status": "ready"}
    conn.close()


def test_bad_requests_get_http_errors_and_the_server_keeps_serving(
    served: tuple[int, Path],
) -> None:
    port, root = served
    bundle = root / "svid" / "bundle.pem"
    status, answer = post(client(port, bundle), b"{not json")
    assert status == 400 and "not JSON" in answer["error"]
    status, answer = post(client(port, bundle), b"[1, 2]")
    assert status == 200 and answer["response"]["allowed"] is False
    conn = client(port, bundle)
    conn.request("POST", "/mutate", body=b"x" * 10,
                 headers={"Content-Length": str(9 << 20)})
    assert conn.getresponse().status == 413
    conn = client(port, bundle)
    conn.request("GET", "/nothing")
    assert conn.getresponse().status == 404
    # a client that never completes its TLS handshake does not stall the others
    with socket.create_connection(("127.0.0.1", port)) as idle:
        idle.sendall(b"\x16\x03\x01")
        status, _ = post(client(port, bundle), json.dumps(reviews.pod(name="a")).encode())
        assert status == 200


def test_an_untrusting_client_refuses_the_certificate_and_plain_http_fails(
    served: tuple[int, Path], tmp_path: Path,
) -> None:
    port, _ = served
    other = CertificateAuthority.init(tmp_path / "other", "other.org")
    with pytest.raises(ssl.SSLCertVerificationError):
        post(client(port, other.directory / "bundle.pem"), b"{}")
    plain = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        plain.request("GET", "/ready")
        plain.getresponse()


def test_a_rotated_certificate_is_served_without_a_restart(
    served: tuple[int, Path], tmp_path: Path,
) -> None:
    port, root = served
    newer = CertificateAuthority.init(tmp_path / "newer", "example.org")
    issue(newer, root / "svid")
    key = root / "svid" / "svid.key"
    os.utime(key, ns=(key.stat().st_atime_ns, key.stat().st_mtime_ns + 1))  # a distinct stamp
    status, _ = post(client(port, newer.directory / "bundle.pem"), b"{}")
    assert status == 200


def test_the_process_serves_and_stops_on_sigterm(tmp_path: Path,
                                                 ca: CertificateAuthority) -> None:
    issue(ca, tmp_path / "svid")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "VWIRE_WEBHOOK_NAMESPACES": "none"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "webhook", "--listen", f"127.0.0.1:{port}",
         "--cert-file", str(tmp_path / "svid" / "svid.crt"),
         "--key-file", str(tmp_path / "svid" / "svid.key")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "serving" is logged once the socket is bound
        assert "serving" in line, line
        status, answer = post(client(port, tmp_path / "svid" / "bundle.pem"),
                              json.dumps(reviews.pod(annotation=URL, name="w")).encode())
        assert status == 200 and answer["response"]["allowed"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_missing_certificate_files_are_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "--listen", "127.0.0.1:0",
         "--cert-file", str(tmp_path / "none.crt"), "--key-file", str(tmp_path / "none.key")],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("webhook: cert-file/key-file: cannot read")
