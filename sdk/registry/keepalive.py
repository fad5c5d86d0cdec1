"""Keep a registration alive: register now, then again every ``interval`` seconds.

Contract of :class:`KeepRegistered`: :meth:`start` registers once (raising the error if that
fails and ``must_succeed``, so a process with a bad record fails fast; otherwise logging it and
retrying), then refreshes in a background task; while the
registry (or nsmgr) is unreachable it retries every ``retry`` seconds and logs the loss and the
recovery once each. :meth:`stop` cancels the task and unregisters (best effort, bounded by
``timeout``). ``registered`` is the registry's latest reply (e.g. with the registrar's SPIFFE ID
appended to ``path_ids``), None before the first success.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.chain import CallContext
from sdk.errors import FabricError
from sdk.registry.core import RegistryChain

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)
_log = structlog.get_logger("sdk.registration")


class KeepRegistered(Generic[M]):
    """See the module docstring."""

    def __init__(
        self,
        chain: RegistryChain[M],
        record: Callable[[], M],
        interval: float,
        retry: float = 0.2,
        timeout: float = 5.0,
    ) -> None:
        self.chain: RegistryChain[M] = chain
        self.record: Callable[[], M] = record
        self.interval = interval
        self.retry = retry
        self.timeout = timeout
        self._task: asyncio.Task[None] | None = None
        self.registered: M | None = None

    async def _register(self) -> None:
        self.registered = await self.chain.register(
            self.record(), CallContext.with_timeout(self.timeout)
        )

    async def start(self, must_succeed: bool = True) -> None:
        healthy = True
        try:
            await self._register()
        except FabricError as exc:
            if must_succeed:
                raise
            _log.warning("first registration failed, retrying", error=str(exc))
            healthy = False
        self._task = asyncio.create_task(self._forever(healthy), name="keep-registered")

    async def _forever(self, healthy: bool) -> None:
        while True:
            await asyncio.sleep(self.interval if healthy else self.retry)  # refresh period
            try:
                await self._register()
            except FabricError as exc:
                if healthy:
                    _log.warning("registration refresh failed", error=str(exc))
                healthy = False
                continue
            if not healthy:
                _log.info("registered again")
            healthy = True

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(FabricError, TimeoutError):
            await asyncio.wait_for(self.chain.unregister(self.record()), self.timeout)
