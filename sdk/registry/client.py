"""Client adapter ``RemoteRegistry``: a registry element that forwards to a registry over gRPC.

Contract: register/find/unregister are sent to the remote registry with the call's remaining
deadline; a failed call raises the :class:`sdk.errors.FabricError` matching its status; a find
stream is cancelled when its consumer stops reading. It is a terminal element (it does not call
``next``): place it last. Used by ``nsmctl`` and by nsmgr to forward registrations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

import grpc

from api.proto import registry_pb2_grpc
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.grpcutil import fabric_error
from sdk.registry.core import Event, Query, RegistryCursor, RegistryElement
from sdk.registry.kinds import SERVICE, RecordKind

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)


class RemoteRegistry(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, kind: RecordKind[M], channel: grpc.aio.Channel) -> None:
        self.kind: RecordKind[M] = kind
        stub_type: Any = (
            registry_pb2_grpc.NetworkServiceRegistryStub
            if kind is SERVICE
            else registry_pb2_grpc.NetworkServiceEndpointRegistryStub
        )
        self._stub = stub_type(channel)

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        try:
            reply: M = await self._stub.Register(record, timeout=next.ctx.remaining())
        except grpc.aio.AioRpcError as exc:
            raise fabric_error(exc) from None
        return reply

    async def find(self, query: Query[M], next: RegistryCursor[M]) -> AsyncIterator[Event[M]]:
        call = self._stub.Find(self.kind.from_query(query), timeout=next.ctx.remaining())
        try:
            async for response in call:
                yield self.kind.to_event(response)
        except grpc.aio.AioRpcError as exc:
            raise fabric_error(exc) from None
        finally:
            call.cancel()

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        try:
            await self._stub.Unregister(record, timeout=next.ctx.remaining())
        except grpc.aio.AioRpcError as exc:
            raise fabric_error(exc) from None
