"""Registry element ``Expire`` and its sweeper: endpoint registrations live for a bounded time.

Contract of the element (for kinds that expire): on register, a record without
``expiration_time`` gets ``now + default_ttl``; one whose expiration is in the past is rejected
with :class:`sdk.errors.InvalidArgument`; one beyond ``now + max_ttl`` is capped there.
A valid expiration is kept exactly as sent. Re-registering the same name refreshes its
expiration (send a new time or none: the stored time sent back again is not extended). Other
kinds pass through untouched.
Place it after validation and in front of ``Watch``/``Persist``.

:meth:`Expire.sweep` is the matching background task: it sleeps until the earliest expiry that
``Persist`` knows of (waking early whenever a record with an expiry enters its cache: from a
registration here or, on a shared store, from another replica), then unregisters every
expired record through the given chain, so watchers see ``deleted=True`` exactly as for an
explicit unregistration.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.errors import InvalidArgument, NotFound
from sdk.metrics import REGISTRY_EXPIRED
from sdk.registry.core import RegistryChain, RegistryCursor, RegistryElement
from sdk.registry.persist import Persist, expiry_of
from sdk.registry.store import StaleWrite

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)

DEFAULT_TTL = 60.0
MAX_TTL = 3600.0

_log = structlog.get_logger("registry.expire")


class Expire(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(
        self,
        default_ttl: float = DEFAULT_TTL,
        max_ttl: float = MAX_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < default_ttl <= max_ttl:
            raise InvalidArgument("default_ttl", f"must be in (0, {max_ttl}] seconds")
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.clock = clock
        self._changed = asyncio.Event()

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        if isinstance(record, NetworkServiceEndpoint):
            now = self.clock()
            asked = expiry_of(record)
            if asked is not None and asked <= now:
                raise InvalidArgument(
                    "expiration_time",
                    f"is {now - asked:.1f} s in the past: leave it empty for the default "
                    f"({self.default_ttl:g} s) or give a future time",
                )
            if asked is None or asked > now + self.max_ttl:
                until = now + (self.default_ttl if asked is None else self.max_ttl)
                record.expiration_time.FromNanoseconds(round(until * 1e9))
            self._changed.set()
        return await next.register(record)

    async def sweep(self, persist: Persist[M], chain: RegistryChain[M]) -> None:
        """Unregister expired records through ``chain`` until cancelled."""
        persist.on_expiry = self._changed.set
        while True:
            at = persist.next_expiry()
            self._changed.clear()
            timeout = None if at is None else max(0.0, at - self.clock())
            if timeout is None or timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout)
                continue
            for record in persist.expired(self.clock()):
                current = persist.get(record.name)
                expires = None if current is None else expiry_of(current)
                if expires is None or expires > self.clock():
                    continue  # refreshed (or removed) while this batch was being swept
                try:
                    await chain.unregister(current)  # type: ignore[arg-type]
                    REGISTRY_EXPIRED.labels(persist.kind.key).inc()
                    _log.info("registration expired", name=record.name)
                except (NotFound, StaleWrite):
                    pass  # removed, or refreshed through another replica, meanwhile
                except Exception as exc:  # keep sweeping: one failure must not stop expiry
                    _log.error("removing an expired registration failed", name=record.name,
                               error=str(exc))
                    await asyncio.sleep(0.1)  # back off before the next round, not a sync wait
