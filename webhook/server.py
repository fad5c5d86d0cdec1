"""The HTTPS server: ``POST /mutate`` (AdmissionReview v1 in, AdmissionReview out), ``GET
/ready`` (200 once serving; the Deployment's readiness and liveness probe).

Standard library only (``http.server`` in threads, ``ssl``): each connection's TLS handshake
happens in its own thread with a 10 s socket timeout, so a slow client cannot stall the accept
loop; bodies are at most :data:`MAX_BODY` bytes and must be JSON. The certificate and key are
re-read when either file changes (checked at most once a second, on new handshakes), so a
rotated certificate (cert-manager, ``nsmctl ca agent``) is served without a restart; TLS 1.2 is
the minimum.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socket import socket
from typing import Any

import structlog

from sdk.errors import InvalidArgument
from webhook.inject import InjectConfig
from webhook.namespaces import NamespaceLookup
from webhook.review import review

log = structlog.get_logger("webhook")

MAX_BODY = 8 << 20  # the API server's objects are at most ~3 MiB
TIMEOUT = 10.0


class Certificates:
    """A server TLS context for a certificate/key pair, reloaded when the files change."""

    def __init__(self, cert_file: Path, key_file: Path, recheck: float = 1.0) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.recheck = recheck
        self._stamp = self._mtimes()
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self.context = self._load()

    def _mtimes(self) -> tuple[int, int]:
        try:
            return (self.cert_file.stat().st_mtime_ns, self.key_file.stat().st_mtime_ns)
        except OSError as exc:
            raise InvalidArgument("cert-file/key-file", f"cannot read {exc.filename}: "
                                  f"{exc.strerror}") from None

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidArgument("cert-file/key-file", f"cannot load {self.cert_file} and "
                                  f"{self.key_file}: {exc}") from None
        context.sni_callback = self._current
        return context

    def _current(self, sock: ssl.SSLObject | ssl.SSLSocket, name: str | None,
                 context: ssl.SSLContext) -> None:
        """On each handshake: serve the latest certificate."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked >= self.recheck:
                self._checked = now
                try:
                    stamp = self._mtimes()
                    if stamp != self._stamp:
                        self.context = self._load()
                        self._stamp = stamp
                        log.info("certificate reloaded", cert=str(self.cert_file))
                except InvalidArgument as exc:  # half-written files: keep the old pair
                    log.warning("certificate not reloaded", reason=str(exc))
            sock.context = self.context


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer
    protocol_version = "HTTP/1.1"
    timeout = TIMEOUT

    def setup(self) -> None:
        super().setup()
        assert isinstance(self.request, ssl.SSLSocket)
        self.request.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http", message=format % args)

    def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path in ("/ready", "/healthz"):
            self._reply(HTTPStatus.OK, {"status": "ready"})
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no {self.path}: use /mutate, /ready"})

    def do_POST(self) -> None:
        if self.path.split("?")[0] != "/mutate":
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no {self.path}: POST /mutate"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._reply(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length is required"})
            return
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        {"error": f"bodies are at most {MAX_BODY} bytes"})
            return
        try:
            doc = json.loads(self.rfile.read(length))
        except (ValueError, RecursionError):
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "the body is not JSON"})
            return
        self._reply(HTTPStatus.OK, review(doc, self.server.config, self.server.lookup))


class WebhookServer(ThreadingHTTPServer):
    """See the module docstring; ``serve_forever`` in a thread, ``shutdown`` to stop."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], certificates: Certificates,
                 config: InjectConfig, lookup: NamespaceLookup) -> None:
        self.certificates, self.config, self.lookup = certificates, config, lookup
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket, Any]:
        sock, address = self.socket.accept()
        sock.settimeout(TIMEOUT)
        wrapped = self.certificates.context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.info("connection failed", peer=str(client_address))  # bad TLS, timeouts, resets


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as an address; InvalidArgument names ``listen``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument("listen", f"{text!r} is not host:port (e.g. 0.0.0.0:8443)")
    return host.strip("[]"), int(port)


