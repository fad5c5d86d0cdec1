"""HTTPS servers for tests: a stand-in Kubernetes API server over TLS, served in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path

from sdk.security.ca import CertificateAuthority
from sdk.security.svid import write_svid
from webhook.server import Certificates


@contextmanager
def serving(server: HTTPServer) -> Iterator[int]:
    """Serve ``server`` in a thread; yields its port; shuts it down and closes it after."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def api_server(root: Path, handler: type[BaseHTTPRequestHandler], token: str) -> Iterator[int]:
    """A stand-in API server at https://localhost:PORT with a certificate of a CA of its own
    (its bundle in ``root/api/bundle.pem``) and a service-account token in ``root/token``."""
    ca = CertificateAuthority.init(root / "apica", "cluster.local")
    write_svid(root / "api", ca.issue("spiffe://cluster.local/api/kube", ["localhost"]),
               ca.bundle)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = Certificates(root / "api" / "svid.crt", root / "api" / "svid.key").context
    server.socket = context.wrap_socket(server.socket, server_side=True)
    (root / "token").write_text(f"{token}\n")
    with serving(server) as port:
        yield port
