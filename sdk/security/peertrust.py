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
* Every call over TLS is checked before the servicer runs: the peer's leaf certificate (gRPC
  shows servers the leaf, not the chain) must verify against the bundle of the trust domain its
  SPIFFE ID names, in the source's current :class:`sdk.security.federation.BundleSet`, at the
  call's time. A refusal aborts the call with UNAUTHENTICATED and the reason (a trust domain not
  federated: its name and ``nsmctl ca federate``), counted and logged as an ``mtls`` refusal
  (:mod:`sdk.security.audit`). Consequence of seeing only the leaf: peers' SVIDs must be signed
  directly by a root of their trust domain (the built-in CA's are); a leaf signed by an
  intermediate is refused with that reason.
* Calls without a certificate (Unix sockets, insecure TCP) pass unchanged: their callers prove
  who they are with path tokens. Synchronous handlers (the fabric has none) are checked too;
  their refusal is an exception, which gRPC reports as UNKNOWN.
* A verified leaf is remembered per bundle set while it is valid (at most 256), so a
  peer's next calls cost a dictionary lookup.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from cryptography import x509

from sdk.errors import FabricError, Unauthenticated
from sdk.security import audit
from sdk.security.federation import BundleSet
from sdk.security.source import SvidSource
from sdk.security.tls import server_credentials

PEER_CERT = "x509_pem_cert"
_KEPT = 256


class PeerTrust(grpc.aio.ServerInterceptor):
    """See the module docstring."""

    def __init__(self, source: SvidSource, clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.clock = clock
        self._verified: OrderedDict[tuple[int, bytes], tuple[BundleSet, float]] = OrderedDict()
        self._lock = threading.Lock()  # synchronous handlers check from gRPC's threads

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials trusting every federated root; see the module docstring."""
        return server_credentials(self.source, federated=True)

    def refusal(self, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """Why the call's TLS peer is refused (None: accepted, or no TLS peer)."""
        try:
            pems = list(context.auth_context().get(PEER_CERT, ()))
        except Exception:  # a context without a call behind it
            return None
        if not pems:
            return None
        pem = pems[0] if isinstance(pems[0], bytes) else str(pems[0]).encode()
        trust = self.source.current().trust
        now = self.clock()
        key = (id(trust), pem)
        with self._lock:
            known = self._verified.get(key)
            if known is not None and known[0] is trust and now < known[1]:
                self._verified.move_to_end(key)
                return None
        try:
            leaf = x509.load_pem_x509_certificate(pem)
            trust.verify([leaf], now)
        except (ValueError, FabricError) as exc:
            reason = f"mTLS peer refused: {exc}"
            audit.record("mtls", reason)
            return reason
        with self._lock:
            self._verified[key] = (trust, leaf.not_valid_after_utc.timestamp())
            if len(self._verified) > _KEPT:
                self._verified.popitem(last=False)
        return None

    def _wrap(self, inner: Callable[..., Any]) -> Callable[..., Any]:
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

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(
            handler_call_details
        )
        if handler is None:
            return None
        for attribute, make in (
            ("unary_unary", grpc.unary_unary_rpc_method_handler),
            ("unary_stream", grpc.unary_stream_rpc_method_handler),
            ("stream_unary", grpc.stream_unary_rpc_method_handler),
            ("stream_stream", grpc.stream_stream_rpc_method_handler),
        ):
            inner = getattr(handler, attribute)
            if inner is None:
                continue
            wrapped: grpc.RpcMethodHandler[Any, Any] = make(  # type: ignore[operator]
                self._wrap(inner),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
            return wrapped
        return handler
