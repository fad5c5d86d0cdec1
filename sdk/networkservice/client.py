"""Client adapter ``Connect``: a NetworkService element that forwards to a remote server.

Contract: request and close are sent over the given channel with the call's remaining deadline
(propagated hop by hop); the remote's answer is returned as is; a failed call raises the
:class:`sdk.errors.FabricError` matching its status. Terminal: place it last in a client chain.
"""

from __future__ import annotations

import grpc

from api.proto import networkservice_pb2_grpc
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.grpcutil import fabric_error
from sdk.networkservice.core import NetworkServiceElement, NSCursor


class Connect(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = networkservice_pb2_grpc.NetworkServiceStub(channel)  # type: ignore[no-untyped-call]

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        try:
            conn: Connection = await self._stub.Request(request, timeout=next.ctx.remaining())
        except grpc.aio.AioRpcError as exc:
            raise fabric_error(exc) from None
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        try:
            await self._stub.Close(conn, timeout=next.ctx.remaining())
        except grpc.aio.AioRpcError as exc:
            raise fabric_error(exc) from None
