"""Server adapter: exposes a registry chain as NSM's registry gRPC services.

One :class:`RegistryServicer` serves either ``registry.NetworkServiceRegistry`` or
``registry.NetworkServiceEndpointRegistry`` depending on its record kind; :func:`add_registry`
registers both on a server. Errors leave through :mod:`sdk.grpcutil`'s mapping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from api.proto import registry_pb2_grpc
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.grpcutil import call_context, stream_edge, unary_edge
from sdk.registry.core import RegistryChain
from sdk.registry.kinds import ENDPOINT, SERVICE, RecordKind

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)
Context = grpc.aio.ServicerContext[Any, Any]


class RegistryServicer(Generic[M]):
    """gRPC methods Register/Find/Unregister over one registry chain."""

    def __init__(self, kind: RecordKind[M], chain: RegistryChain[M]) -> None:
        self.kind: RecordKind[M] = kind
        self.chain: RegistryChain[M] = chain

    @unary_edge
    async def Register(self, request: M, context: Context) -> M:
        return await self.chain.register(request, call_context(context))

    @stream_edge
    async def Find(self, request: Message, context: Context) -> AsyncIterator[Message]:
        async for event in self.chain.find(self.kind.to_query(request), call_context(context)):
            yield self.kind.from_event(event)

    @unary_edge
    async def Unregister(self, request: M, context: Context) -> Empty:
        await self.chain.unregister(request, call_context(context))
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
