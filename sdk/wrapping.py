"""Server interceptors that wrap a method's behaviour, built once per method handler.

The fabric's server interceptors (:class:`sdk.limits.InFlightLimit`,
:class:`sdk.security.peertrust.PeerTrust`) run code around a method's behaviour. gRPC asks each
interceptor for the handler of every call, so building the wrapped handler there (new closures,
a new ``RpcMethodHandler``) would repeat the same work at every call of every hop.

Contract of :class:`WrappingInterceptor`:

* a subclass says how to wrap a behaviour in :meth:`WrappingInterceptor.wrap`, given the kind of
  call (``unary_unary``, ``unary_stream``, ``stream_unary``, ``stream_stream``); returning None
  leaves that handler as it is. ``wrap`` runs once per handler, not per call: every check of a
  call (its peer, its budget) belongs in the behaviour it returns;
* :meth:`WrappingInterceptor.intercept_service` hands gRPC the handler the rest of the chain
  gave, with its behaviour wrapped and its (de)serializers kept; the wrapped handler is built
  the first time a handler is seen and reused for the next calls of that handler (at most
  :data:`KEPT` handlers, the least recently used dropped first, so handlers made anew at each
  call cannot make it grow); a handler gRPC cannot hash is wrapped at each call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import grpc

from sdk.lru import Lru

#: Method handlers whose wrapped form an interceptor keeps.
KEPT = 128

Behaviour = Callable[..., Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """See the module docstring."""

    def __init__(self) -> None:
        self._wrapped: Lru[Handler, Handler] = Lru(KEPT)

    def wrap(self, kind: str, behaviour: Behaviour) -> Behaviour | None:
        """``behaviour`` (a call of ``kind``) with this interceptor's code around it; None:
        leave it as it is."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler: Handler | None = await continuation(handler_call_details)
        if handler is None:
            return None
        try:
            known = self._wrapped.get(handler)
        except TypeError:  # not hashable: wrapped anew, never kept
            return self._rewrap(handler)
        if known is None:
            known = self._rewrap(handler)
            self._wrapped.put(handler, known)
        else:
            self._wrapped.touch(handler)
        return known

    def _rewrap(self, handler: Handler) -> Handler:
        for kind, make in _KINDS:
            inner = getattr(handler, kind)
            if inner is None:
                continue
            behaviour = self.wrap(kind, inner)
            if behaviour is None:
                return handler
            wrapped: Handler = make(  # type: ignore[operator]
                behaviour,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
            return wrapped
        return handler
