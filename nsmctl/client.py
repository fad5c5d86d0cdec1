"""A registry client for commands: one gRPC channel, one RemoteRegistry chain per record kind
(several comma-separated addresses: one channel per registry replica and a ``Replicas`` chain,
which moves to the next replica when one is unavailable).

Every unary call and every non-watching find carries the ``--timeout`` deadline; watches have
none. A call that fails because the registry cannot be reached (the channel never became ready)
is reported as :class:`Unreachable` with the address and the options that set it; a missing name
as a :class:`sdk.errors.NotFound` worded for the operator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Self, TypeVar

import grpc

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from nsmctl.context import CliError
from nsmctl.kinds import CliKind
from sdk import grpcutil
from sdk.chain import CallContext
from sdk.errors import DeadlineExceeded, NotFound, Unavailable
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import Event, Query, RegistryChain
from sdk.registry.replicas import Replicas

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)


class Unreachable(CliError):
    """The registry did not answer at its address."""

    def __init__(self, address: str) -> None:
        super().__init__(
            f"cannot reach the registry at {address}: is it running? "
            "(set --registry or NSMCTL_REGISTRY)"
        )


def not_found(kind: CliKind[M], name: str) -> NotFound:
    """The error for a name that is not registered."""
    return NotFound(f"{kind.title} {name!r} not found")


class RegistryClient:
    """Use as ``async with RegistryClient(address, timeout) as client``."""

    def __init__(self, address: str, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._channels: list[grpc.aio.Channel] = []

    async def __aenter__(self) -> Self:
        addresses = [a.strip() for a in self.address.split(",") if a.strip()]
        self._channels = [grpcutil.channel(a) for a in addresses or [self.address]]
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels = []

    def _chain(self, kind: CliKind[M]) -> RegistryChain[M]:
        assert self._channels, "use RegistryClient as an async context manager"
        if len(self._channels) == 1:
            return RegistryChain([RemoteRegistry(kind.record, self._channels[0])])
        return RegistryChain([Replicas(kind.record, self._channels)])

    def _context(self) -> CallContext:
        return CallContext.with_timeout(self.timeout)

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """Turn a failure to connect into :class:`Unreachable`."""
        try:
            yield
        except (Unavailable, DeadlineExceeded) as exc:
            ready = any(
                channel.get_state() == grpc.ChannelConnectivity.READY for channel in self._channels
            )
            if not ready:
                raise Unreachable(self.address) from exc
            raise

    async def list(self, kind: CliKind[M], name: str = "") -> list[M]:
        """The current records (only ``name`` when given), sorted by name."""
        with self._reaching():
            events = [
                event
                async for event in self._chain(kind).find(
                    Query(kind.template(name)), self._context()
                )
            ]
        return sorted((event.record for event in events), key=lambda record: record.name)

    async def get(self, kind: CliKind[M], name: str) -> M:
        """The record called ``name``; NotFound when there is none."""
        records = await self.list(kind, name)
        if not records:
            raise not_found(kind, name)
        return records[0]

    async def register(self, kind: CliKind[M], record: M) -> M:
        """Register (create or replace) a record; returns it as the registry stored it."""
        with self._reaching():
            return await self._chain(kind).register(record, self._context())

    async def unregister(self, kind: CliKind[M], name: str) -> None:
        """Remove the record called ``name``; NotFound when there is none."""
        with self._reaching():
            try:
                await self._chain(kind).unregister(kind.template(name), self._context())
            except NotFound:
                raise not_found(kind, name) from None

    async def watch(self, kind: CliKind[M], name: str = "") -> AsyncIterator[Event[M]]:
        """The current records, then every change, until the registry ends the stream."""
        with self._reaching():
            async for event in self._chain(kind).find(Query(kind.template(name), watch=True)):
                yield event
