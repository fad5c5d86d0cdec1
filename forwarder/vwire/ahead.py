"""A remote side's preparation running beside the request it is for (:func:`.prepare_remote`).

:class:`Ahead` owns one background preparation from :meth:`Ahead.start` on:

* :meth:`Ahead.take` waits for it and hands it over (the caller, normally
  :func:`.program_remote`, owns it from then on); a preparation that failed is logged and
  answers None (programming then does everything itself, and reports the error if it recurs);
* :meth:`Ahead.discard` cancels it, waits until it ended (its own rollback ran) and removes what
  it made, so a request that failed, was cancelled or is answered otherwise leaves nothing; a
  cleanup failure is logged (the marker lets the forwarder's sweep find the interface later);
* both are idempotent and safe on an :class:`Ahead` that never started (``Ahead.none()``).
"""

from __future__ import annotations

import asyncio

import structlog

from forwarder.kernel import KernelPort
from forwarder.wireguard import WireGuardBackend
from sdk.aio import cancel_all
from sdk.errors import FabricError

from .remote import PreparedRemote, RemotePreparation, prepare_remote

_log = structlog.get_logger("forwarder.vwire")


class Ahead:
    """See the module docstring."""

    def __init__(self, task: asyncio.Task[PreparedRemote] | None) -> None:
        self._task = task

    @classmethod
    def none(cls) -> Ahead:
        return cls(None)

    @classmethod
    def start(cls, kernel: KernelPort, backend: WireGuardBackend,
              prep: RemotePreparation) -> Ahead:
        return cls(asyncio.create_task(prepare_remote(kernel, backend, prep),
                                       name=f"prepare-{prep.connection_id}"))

    async def take(self) -> PreparedRemote | None:
        """The preparation, now owned by the caller; None if there is none or it failed."""
        task, self._task = self._task, None
        if task is None:
            return None
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():  # the caller is cancelled, not the preparation
                await Ahead(task).discard()
                raise
            return None
        except FabricError as exc:
            _log.warning("vwire preparation failed", error=str(exc))
            return None

    async def discard(self) -> None:
        """Cancel the preparation and remove what it made (see the module docstring)."""
        task, self._task = self._task, None
        if task is None:
            return
        await cancel_all([task])
        if task.cancelled() or task.exception() is not None:
            return  # prepare_remote rolled back
        try:
            await task.result().discard()
        except FabricError as exc:
            _log.warning("removing a vwire preparation failed", error=str(exc))
