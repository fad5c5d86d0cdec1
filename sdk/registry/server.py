"""Server adapter: exposes a registry chain as NSM's registry gRPC services.

One :class:`RegistryServicer` serves either ``registry.NetworkServiceRegistry`` or
``registry.NetworkServiceEndpointRegistry`` depending on its record kind; :func:`add_registry`
registers both on a server. Errors leave through :mod:`sdk.grpcutil`'s mapping.

Besides the deadline and peer of :func:`sdk.grpcutil.call_context`, every call hands the chain
two facts: ``ctx.values[TRANSPORT]``, the transport address gRPC saw (``unix:...``,
``ipv4:...``, ``ipv6:...``) even when the peer is a SPIFFE ID, and for Register and Unregister
``ctx.values[TOKEN]``, the registration token of the metadata entry
:data:`TOKEN_HEADER` when the caller sent one (verified by
:class:`sdk.registry.registrant.VerifyRegistrant`, not here).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from api.proto import registry_pb2_grpc
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.chain import CallContext, Key
from sdk.grpcutil import call_context, stream_edge, unary_edge
from sdk.registry.core import RegistryChain
from sdk.registry.kinds import ENDPOINT, SERVICE, RecordKind

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)
Context = grpc.aio.ServicerContext[Any, Any]

#: The transport address of the caller as gRPC saw it (``unix:...``, ``ipv4:...``).
TRANSPORT: Key[str] = Key("registry.transport")
#: The registration token the caller sent in its metadata.
TOKEN: Key[str] = Key("registry.registration_token")
#: The metadata entry that carries a registration token.
TOKEN_HEADER = "vwire-registration-token"
_MAX_TOKEN = 16 * 1024


def _context(context: Context, with_token: bool) -> CallContext:
    ctx = call_context(context)
    ctx.values[TRANSPORT] = context.peer() or ""
    if with_token:
        for key, value in context.invocation_metadata() or ():
            if key == TOKEN_HEADER and isinstance(value, str) and len(value) <= _MAX_TOKEN:
                ctx.values[TOKEN] = value
                break
    return ctx


class RegistryServicer(Generic[M]):
    """gRPC methods Register/Find/Unregister over one registry chain."""

    def __init__(self, kind: RecordKind[M], chain: RegistryChain[M]) -> None:
        self.kind: RecordKind[M] = kind
        self.chain: RegistryChain[M] = chain

    @unary_edge
    async def Register(self, request: M, context: Context) -> M:
        return await self.chain.register(request, _context(context, True))

    @stream_edge
    async def Find(self, request: Message, context: Context) -> AsyncIterator[Message]:
        async for event in self.chain.find(self.kind.to_query(request), _context(context, False)):
            yield self.kind.from_event(event)

    @unary_edge
    async def Unregister(self, request: M, context: Context) -> Empty:
        await self.chain.unregister(request, _context(context, True))
        return Empty()


def add_registry(
    server: grpc.aio.Server,
    services: RegistryChain[NetworkService],
    endpoints: RegistryChain[NetworkServiceEndpoint],
) -> None:
    """Serve both registry services from the two chains on ``server``."""
    # The generated add_* functions only look methods up by name, so one generic servicer class
    # serves both services.
    add_services: Any = registry_pb2_grpc.add_NetworkServiceRegistryServicer_to_server
    add_endpoints: Any = registry_pb2_grpc.add_NetworkServiceEndpointRegistryServicer_to_server
    add_services(RegistryServicer(SERVICE, services), server)
    add_endpoints(RegistryServicer(ENDPOINT, endpoints), server)
