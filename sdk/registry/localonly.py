"""Registry element ``LocalCallersOnly``: a node's registry API is for its own workloads.

The nsmgr serves NSM's registry API so that local endpoints and forwarders can register through
it; other nodes' nsmgrs talk to the domain registry directly and have no business calling it.
Contract: every call (register, find, unregister) whose transport (``ctx.values[TRANSPORT]``,
set by :mod:`sdk.registry.server`) is not a Unix socket raises
:class:`sdk.errors.PermissionDenied` naming the fix, logged and counted as a ``register``
refusal, before anything else runs; nothing is stored or returned. In-process calls (no transport
recorded) pass. Place it first in the chain. Nothing to undo: it changes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.chain import CallContext
from sdk.registry.core import Event, Query, RegistryCursor, RegistryElement
from sdk.registry.kinds import RecordKind
from sdk.registry.server import TRANSPORT
from sdk.security import audit

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)


class LocalCallersOnly(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, kind: RecordKind[M], registry: str = "the domain registry") -> None:
        self.kind: RecordKind[M] = kind
        self.registry = registry

    def _check(self, action: str, ctx: CallContext) -> None:
        transport = ctx.values.get(TRANSPORT)
        if transport is None or transport.startswith("unix:"):
            return
        raise audit.denied(
            "register",
            f"{action} of {self.kind.title}s is served only to workloads on this node's unix "
            f"socket, not over TCP: other nodes call {self.registry} directly",
            peer=ctx.peer,
        )

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        self._check("register", next.ctx)
        return await next.register(record)

    async def find(self, query: Query[M], next: RegistryCursor[M]) -> AsyncIterator[Event[M]]:
        self._check("find", next.ctx)
        async for event in next.find(query):
            yield event

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        self._check("unregister", next.ctx)
        await next.unregister(record)
