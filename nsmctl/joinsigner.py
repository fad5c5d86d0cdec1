"""The join signer and its client: a VM exchanges a join token and certificate requests made on
the VM for its nsmgr's and forwarder's SVIDs.

Server (``nsmctl node signer --dir CA --listen tcp://HOST:PORT``, where the CA is): HTTPS with a
certificate of the CA for the trust domain's server name (:func:`sdk.security.tls.server_name`).
``GET /bundle`` returns the CA bundle (public). ``POST /join`` takes JSON ``{"token": TEXT,
"csrs": {"nsmgr": PEM, "forwarder": PEM}}`` (at most 64 KiB); both CSRs must carry a valid
signature over a P-256 key *before* the token is consumed (:mod:`nsmctl.jointoken`), then it
answers ``{"nsmgr": PEM, "forwarder": PEM, "bundle": PEM}``: certificates for
``spiffe://TD/nsmgr/nsmgr-NODE`` and ``spiffe://TD/forwarder/forwarder-NODE`` (the node named by
the token, never by the request), valid ``ttl``. Refusals: 400 with the field at fault, 403 for
any token problem (one message), 500 without details (logged). ``POST /renew`` takes the same
``csrs`` from a caller whose TLS client certificate is a node's nsmgr SVID (verified against the
bundle: the node is named by it) and answers the same way: renewal without a token.

Client (:func:`fetch_identity`, used by ``nsmctl node join --token T --signer tcp://HOST:PORT``):
fetches the bundle, accepts it only if it holds the root the token pins, then talks to the signer
verifying its certificate against that bundle; makes both key pairs locally, sends their CSRs,
checks that each certificate returned chains to the bundle and names the expected identity, and
writes ``DIR/nsmgr`` and ``DIR/forwarder`` (keys 0600), only once both are good.
:func:`renew_identity` does the same over ``/renew`` with the current nsmgr SVID as client
certificate. No private key leaves the node.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nsmctl.jointoken import JoinToken, TokenStore
from sdk.errors import (
    FabricError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from sdk.grpcutil import parse_address
from sdk.security.ca import CertificateAuthority
from sdk.security.svid import (
    CERT_FILE,
    KEY_FILE,
    Svid,
    TrustBundle,
    load_certificates,
    read_svid,
    spiffe_id_of,
    write_svid,
)
from sdk.security.tls import server_name

log = structlog.get_logger("nsmctl.signer")

KINDS = ("nsmgr", "forwarder")
MAX_BODY = 64 * 1024
DEFAULT_TTL = 24 * 3600.0


def pin_of(cert: x509.Certificate) -> str:
    """The hex SHA-256 of a certificate's DER: what a join token pins."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _csr(pem: object, kind: str) -> x509.CertificateSigningRequest:
    if not isinstance(pem, str) or len(pem) > 8192:
        raise InvalidArgument(f"csrs.{kind}", "must be a PEM certificate request")
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError:
        raise InvalidArgument(f"csrs.{kind}", "is not a PEM certificate request") from None
    key = csr.public_key()
    if not csr.is_signature_valid or not isinstance(key, ec.EllipticCurvePublicKey) or (
            not isinstance(key.curve, ec.SECP256R1)):
        raise InvalidArgument(f"csrs.{kind}", "must be signed by its own P-256 key")
    return csr


class JoinSigner:
    """See the module docstring."""

    def __init__(self, ca_dir: Path, listen: str, ttl: float = DEFAULT_TTL) -> None:
        address = parse_address(listen, "--listen")
        if address.scheme != "tcp":
            raise InvalidArgument("--listen", "must be tcp://HOST:PORT")
        self.address = address
        self.ca_dir = ca_dir
        self.ca = CertificateAuthority.load(ca_dir)
        self.tokens = TokenStore(ca_dir)
        self.ttl = ttl
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def answer(self, body: bytes) -> dict[str, str]:
        """The answer to one ``POST /join`` body (raises the refusal)."""
        try:
            doc = json.loads(body)
        except ValueError:
            raise InvalidArgument("body", "is not JSON") from None
        if not isinstance(doc, dict):
            raise InvalidArgument("body", "give {\"token\": ..., \"csrs\": {...}}")
        token = JoinToken.parse(doc.get("token", ""), "token")
        csrs = self._csrs(body)
        if token.trust_domain != self.ca.trust_domain:
            raise PermissionDenied("join token refused: it is for another trust domain")
        self.tokens.consume(token)
        return self._sign(token.node, csrs)

    def answer_renew(self, body: bytes, peer_der: bytes | None) -> dict[str, str]:
        """The answer to one ``POST /renew``: the caller proved, by the nsmgr SVID it presented
        (verified by TLS against the bundle), which node it is; both of that node's SVIDs are
        signed again for the request's new keys."""
        if not peer_der:
            raise PermissionDenied("renewal needs the node's current nsmgr SVID as the TLS "
                                   "client certificate")
        spiffe = spiffe_id_of(x509.load_der_x509_certificate(peer_der))
        kind, _, name = spiffe.path.strip("/").partition("/")
        node = name.removeprefix("nsmgr-")
        if spiffe.trust_domain != self.ca.trust_domain or kind != "nsmgr" or node == name:
            raise PermissionDenied(f"{spiffe} is not a node's nsmgr: renewal refused")
        return self._sign(node, self._csrs(body))

    def _csrs(self, body: bytes) -> dict[str, x509.CertificateSigningRequest]:
        try:
            doc = json.loads(body)
        except ValueError:
            raise InvalidArgument("body", "is not JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("csrs"), dict):
            raise InvalidArgument("csrs", "give {\"csrs\": {\"nsmgr\": PEM, \"forwarder\": PEM}}")
        return {kind: _csr(doc["csrs"].get(kind), kind) for kind in KINDS}

    def _sign(self, node: str, csrs: dict[str, x509.CertificateSigningRequest]
              ) -> dict[str, str]:
        td = self.ca.trust_domain
        answer = {"bundle": self.ca.bundle.pem().decode()}
        for kind, csr in csrs.items():
            public_key = csr.public_key()
            assert isinstance(public_key, ec.EllipticCurvePublicKey)  # checked by _csr
            cert = self.ca.sign(f"spiffe://{td}/{kind}/{kind}-{node}", public_key,
                                [server_name(td)], self.ttl)
            answer[kind] = cert.public_bytes(serialization.Encoding.PEM).decode()
        log.info("node identities signed", node=node, ttl=self.ttl)
        return answer

    def start(self) -> int:
        """Serve in a thread; returns the bound port."""
        svid = self.ca.issue(f"spiffe://{self.ca.trust_domain}/signer/join",
                             [server_name(self.ca.trust_domain)], self.ttl)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.verify_mode = ssl.CERT_OPTIONAL  # /renew: the node's SVID; /join: none yet
        context.load_verify_locations(cadata=self.ca.bundle.pem().decode())
        with tempfile.TemporaryDirectory() as scratch:  # load_cert_chain wants files
            write_svid(Path(scratch), svid, self.ca.bundle)
            context.load_cert_chain(Path(scratch) / "svid.crt", Path(scratch) / "svid.key")
        signer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http", request=format % args)

            def _send(self, code: int, doc: dict[str, str], text: str = "") -> None:
                data = text.encode() if text else json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path != "/bundle":
                    self._send(404, {"error": "GET /bundle or POST /join"})
                    return
                self._send(200, {}, signer.ca.bundle.pem().decode())

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.path not in ("/join", "/renew") or not 0 < length <= MAX_BODY:
                    self._send(400, {"error": "POST /join or /renew with a body of at most "
                                              f"{MAX_BODY} bytes"})
                    return
                body = self.rfile.read(length)
                try:
                    if self.path == "/join":
                        self._send(200, signer.answer(body))
                    else:
                        peer = self.connection.getpeercert(binary_form=True)  # type: ignore[attr-defined]
                        self._send(200, signer.answer_renew(body, peer))
                except InvalidArgument as exc:
                    self._send(400, {"error": str(exc)})
                except (PermissionDenied, Unauthenticated) as exc:
                    self._send(403, {"error": str(exc)})
                except Exception:
                    log.exception("join request failed")
                    self._send(500, {"error": "the signer failed: see its log"})

        server = ThreadingHTTPServer((self.address.host, self.address.port or 0), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="join-signer",
                                        daemon=True)
        self._thread.start()
        port: int = server.server_address[1]
        log.info("join signer serving", trust_domain=self.ca.trust_domain, port=port)
        return port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()


# -- the client ---------------------------------------------------------------------------------


class _Verified(http.client.HTTPSConnection):
    """HTTPS to an address, checking the certificate for ``name`` (not the address)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, name: str,
                 timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._name = name
        self._ctx = context

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(raw, server_hostname=self._name)


def _call(conn: http.client.HTTPSConnection, method: str, path: str,
          body: bytes | None = None) -> tuple[int, bytes]:
    try:
        conn.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, response.read(MAX_BODY + 1)
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        raise FailedPrecondition(f"cannot reach the join signer at {conn.host}:{conn.port}: "
                                 f"{exc}") from None
    finally:
        conn.close()


def _pinned_bundle(host: str, port: int, token: JoinToken, timeout: float) -> TrustBundle:
    insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # only to read the bundle, which the pin then checks
    status, data = _call(http.client.HTTPSConnection(host, port, context=insecure,
                                                     timeout=timeout), "GET", "/bundle")
    try:
        bundle = TrustBundle.from_pem(data, token.trust_domain) if status == 200 else None
    except FabricError:
        bundle = None
    if bundle is None or token.pin not in {pin_of(root) for root in bundle.roots}:
        raise FailedPrecondition(f"the signer at {host}:{port} does not hold the CA the token "
                                 "pins: wrong --signer, or something in between")
    return bundle


def _address(signer: str) -> tuple[str, int]:
    address = parse_address(signer, "--signer")
    if address.scheme != "tcp" or not address.host or not address.port:
        raise InvalidArgument("--signer", "must be tcp://HOST:PORT")
    return address.host, address.port


def _exchange(conn: http.client.HTTPSConnection, path: str, extra: dict[str, str],
              bundle: TrustBundle, trust_domain: str, node: str, dest: Path) -> None:
    """Make both key pairs here, send their CSRs, check and store what comes back."""
    keys = {kind: ec.generate_private_key(ec.SECP256R1()) for kind in KINDS}
    csrs = {kind: x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
            for kind, key in keys.items()}
    status, data = _call(conn, "POST", path, json.dumps({**extra, "csrs": csrs}).encode())
    try:
        answer = json.loads(data)
    except ValueError:
        answer = {}
    if status != 200:
        raise PermissionDenied(f"the join signer refused: {answer.get('error', status)}")
    checked = {}
    for kind, key in keys.items():
        chain = tuple(load_certificates(str(answer.get(kind, "")).encode(), kind))
        expected = f"spiffe://{trust_domain}/{kind}/{kind}-{node}"
        if str(bundle.verify(chain)) != expected:
            raise FailedPrecondition(f"the signer returned a {kind} certificate that is not "
                                     f"{expected}")
        checked[kind] = Svid(chain, key)
    for kind, svid in checked.items():  # only once both are good
        write_svid(dest / kind, svid, bundle)


def fetch_identity(token: JoinToken, signer: str, dest: Path, timeout: float = 10.0) -> None:
    """Get this node's SVIDs from ``signer`` into ``dest`` (see the module docstring)."""
    host, port = _address(signer)
    bundle = _pinned_bundle(host, port, token, timeout)
    context = ssl.create_default_context(cadata=bundle.pem().decode())
    conn = _Verified(host, port, context, server_name(token.trust_domain), timeout)
    _exchange(conn, "/join", {"token": token.text()}, bundle, token.trust_domain, token.node,
              dest)


def renew_due(identity: Path, fraction: float = 0.5, now: float | None = None) -> bool:
    """Whether either SVID under ``identity`` is past ``fraction`` of its lifetime."""
    moment = time.time() if now is None else now
    for kind in KINDS:
        svid, _ = read_svid(identity / kind)
        if moment >= svid.not_before + fraction * (svid.not_after - svid.not_before):
            return True
    return False


def renew_identity(signer: str, identity: Path, timeout: float = 10.0) -> str:
    """Renew both SVIDs under ``identity`` (``nsmgr/``, ``forwarder/``) from ``signer``,
    authenticating with the current nsmgr SVID; new keys are made here. Returns the node."""
    host, port = _address(signer)
    svid, bundle = read_svid(identity / "nsmgr")
    node = svid.spiffe_id.path.strip("/").partition("/")[2].removeprefix("nsmgr-")
    context = ssl.create_default_context(cadata=bundle.pem().decode())
    context.load_cert_chain(identity / "nsmgr" / CERT_FILE, identity / "nsmgr" / KEY_FILE)
    conn = _Verified(host, port, context, server_name(bundle.trust_domain), timeout)
    _exchange(conn, "/renew", {}, bundle, bundle.trust_domain, node, identity)
    return node
