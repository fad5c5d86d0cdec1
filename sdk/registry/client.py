"""Client adapter ``RemoteRegistry``: a registry element that forwards to a registry over gRPC.

Contract: register/find/unregister are sent to the remote registry with the call's remaining
deadline; a failed call raises the :class:`sdk.errors.FabricError` matching its status; a find
stream is cancelled when its consumer stops reading. It is a terminal element (it does not call
``next``): place it last. Used by ``nsmctl`` and by nsmgr to forward registrations.

Given an SVID ``source``, every register and unregister carries a registration token signed with
it for exactly the record sent (:func:`sdk.registry.registrant.attach`), which is how a workload
proves who it is to its nsmgr over the unix socket. Endpoints and forwarders registering through
an nsmgr that has an SVID must pass theirs.
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
from sdk.registry.registrant import attach
from sdk.security.source import SvidSource

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)


class RemoteRegistry(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(
        self, kind: RecordKind[M], channel: grpc.aio.Channel, source: SvidSource | None = None
    ) -> None:
        self.kind: RecordKind[M] = kind
        self.source = source
        stub_type: Any = (
            registry_pb2_grpc.NetworkServiceRegistryStub
            if kind is SERVICE
            else registry_pb2_grpc.NetworkServiceEndpointRegistryStub
        )
        self._stub = stub_type(channel)

    def _proof(self, action: str, record: M) -> tuple[tuple[str, str], ...] | None:
        return attach(self.source, action, self.kind, record) if self.source else None

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        try:
            reply: M = await self._stub.Register(
                record, timeout=next.ctx.remaining(), metadata=self._proof("register", record)
            )
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
            await self._stub.Unregister(
                record, timeout=next.ctx.remaining(), metadata=self._proof("unregister", record)
            )
        except grpc.aio.AioRpcError as exc:
            raise fabric_error(exc) from None
