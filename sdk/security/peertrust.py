"""Servers that accept mTLS peers of federated trust domains: the TLS roots and the per-call check.

A TLS server cannot know in advance which trust domain a client comes from, so it hands gRPC
the roots of **every** trust domain it federates with. gRPC then accepts a client certificate
signed by any of them — including a foreign root signing a *local* ID, or a third trust
domain's. :class:`PeerTrust` closes that hole.

Contract of :class:`PeerTrust(source)` (a ``grpc.aio`` server interceptor):

* :meth:`PeerTrust.credentials` are server credentials (:func:`sdk.security.tls.server_credentials`
  with the roots of ``source.current().trust``: local and federated), following the source: a
  federated bundle added or removed takes effect for the next TLS handshake, no restart.
  Use them only on a server built with this interceptor (``limited_server(...,
  interceptors=[peers])``): the credentials alone let any federated root vouch for any ID.
* Every call over TLS is checked before the servicer runs: the peer's certificate chain (its
  leaf, ``x509_pem_cert``, and the intermediates it sent, ``x509_pem_cert_chain``) must verify
  against the bundle of the trust domain the leaf's SPIFFE ID names, in the source's current
  :class:`sdk.security.federation.BundleSet`, at the call's time. A refusal aborts the call with
  UNAUTHENTICATED and the reason (a trust domain not federated: its name and ``nsmctl ca
  federate``), counted and logged as an ``mtls`` refusal (:mod:`sdk.security.audit`).
* Calls without a certificate (Unix sockets, insecure TCP) pass unchanged: their callers prove
  who they are with path tokens. Synchronous handlers (the fabric has none) are checked too;
  their refusal is an exception, which gRPC reports as UNKNOWN.
* A verified chain is remembered per bundle set while it and its roots are valid (at most
  256), so a peer's next calls cost a dictionary lookup.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from cryptography import x509

from sdk.errors import FabricError, Unauthenticated
from sdk.lru import Lru
from sdk.security import audit
from sdk.security.federation import BundleSet
from sdk.security.source import SvidSource
from sdk.security.tls import server_credentials
from sdk.wrapping import Behaviour, WrappingInterceptor

PEER_CERT = "x509_pem_cert"
#: The certificates the peer sent after its leaf (gRPC sets it when there are any).
PEER_CHAIN = "x509_pem_cert_chain"
_KEPT = 256


class PeerTrust(WrappingInterceptor):
    """See the module docstring."""

    def __init__(self, source: SvidSource, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.source = source
        self.clock = clock
        self._verified: Lru[tuple[int, bytes], tuple[BundleSet, float]] = Lru(_KEPT)
        self._lock = threading.Lock()  # synchronous handlers check from gRPC's threads

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials trusting every federated root; see the module docstring."""
        return server_credentials(self.source, federated=True)

    def refusal(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """Why the call's TLS peer is refused (None: accepted, or no TLS peer)."""
        try:
            auth = context.auth_context()
        except Exception:  # a context without a call behind it
            return None
        leaf_pem = _first(auth.get(PEER_CERT, ()))
        if leaf_pem is None:
            return None
        chain_pem = _first(auth.get(PEER_CHAIN, ())) or b""
        trust = self.source.current().trust
        now = self.clock()
        key = (id(trust), leaf_pem + chain_pem)
        with self._lock:
            known = self._verified.get(key)
            if known is not None and known[0] is trust and now < known[1]:
                self._verified.touch(key)
                return None
        try:
            chain = _peer_chain(leaf_pem, chain_pem)
            identity = trust.verify(chain, now)
        except (ValueError, FabricError) as exc:
            reason = f"mTLS peer refused: {exc}"
            audit.record("mtls", reason)
            return reason
        roots = trust.require(identity.trust_domain).roots
        until = min(c.not_valid_after_utc.timestamp() for c in (*chain, *roots))
        with self._lock:
            self._verified.put(key, (trust, until))
        return None

    def wrap(self, kind: str, inner: Behaviour) -> Behaviour:
        if inspect.isasyncgenfunction(inner):
            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]
                             ) -> AsyncIterator[Any]:
                if (why := self.refusal(context)) is not None:
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, why)
                async for item in inner(request, context):
                    yield item
            return stream
        if inspect.iscoroutinefunction(inner):
            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                if (why := self.refusal(context)) is not None:
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, why)
                return await inner(request, context)
            return unary

        def synchronous(request: Any, context: Any) -> Any:
            if (why := self.refusal(context)) is not None:
                raise Unauthenticated(why)
            return inner(request, context)
        return synchronous


def _first(values: Any) -> bytes | None:
    for value in values:
        return value if isinstance(value, bytes) else str(value).encode()
    return None


def _peer_chain(leaf_pem: bytes, chain_pem: bytes) -> list[x509.Certificate]:
    """The peer's leaf followed by the other certificates it sent (the leaf not repeated)."""
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    rest = x509.load_pem_x509_certificates(chain_pem) if chain_pem.strip() else []
    return [leaf, *(c for c in rest if c != leaf)]
