"""Server adapter: exposes a NetworkService chain as NSM's ``networkservice.NetworkService``.

Each RPC's message is first checked against the size and count limits of :mod:`sdk.limits`
(Request: :func:`sdk.limits.check_request`, Close: :func:`sdk.limits.check_connection`); a
message over a limit is refused with INVALID_ARGUMENT naming the field and the chain never sees
it. Otherwise the RPC enters the chain with a :class:`sdk.chain.CallContext` carrying the RPC's
deadline and peer; fabric errors leave as their gRPC status (see :mod:`sdk.grpcutil`).
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.empty_pb2 import Empty

from api.proto import networkservice_pb2_grpc
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.grpcutil import call_context, unary_edge
from sdk.limits import check_connection, check_request
from sdk.networkservice.core import NetworkServiceChain

Context = grpc.aio.ServicerContext[Any, Any]


class NetworkServiceServicer(networkservice_pb2_grpc.NetworkServiceServicer):
    """gRPC Request/Close over one NetworkService chain."""

    def __init__(self, chain: NetworkServiceChain) -> None:
        self.chain = chain

    @unary_edge
    async def Request(self, request: NetworkServiceRequest, context: Context) -> Connection:
        check_request(request)
        return await self.chain.run_request(request, call_context(context))

    @unary_edge
    async def Close(self, request: Connection, context: Context) -> Empty:
        check_connection(request)
        await self.chain.run_close(request, call_context(context))
        return Empty()


def add_network_service(server: grpc.aio.Server, chain: NetworkServiceChain) -> None:
    """Serve ``chain`` as ``networkservice.NetworkService`` on ``server``."""
    networkservice_pb2_grpc.add_NetworkServiceServicer_to_server(  # type: ignore[no-untyped-call]
        NetworkServiceServicer(chain), server
    )
