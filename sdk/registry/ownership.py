"""Registry element ``Ownership``: only the identity that registered a record may change it.

Contract: the first successful ``register`` of a name makes the caller (its SPIFFE ID from
``ctx.peer``; callers without one, e.g. over a Unix socket, are "anonymous" and share one owner)
the record's owner. A later ``register`` (refresh or change) or ``unregister`` of that name by
anyone else raises :class:`sdk.errors.PermissionDenied`, logged and counted
(``vwire_authz_denied_total{kind="ownership"}``), and goes no further. In-process calls (empty
``ctx.peer``, e.g. the expiry sweeper) are trusted. A successful unregister forgets the owner, so
the name is free again. Calls for one name are serialised, so two identities racing for a free
name cannot both win.

Owners live in memory, keyed by record name (as NSM's registry does): after a registry restart
the first identity that refreshes a stored record becomes its owner again. Endpoints refresh well
within their lifetime, so the rightful owner normally reclaims its records first. Place it after
``Validate`` (names are valid) and before the elements that store or announce (``Expire``,
``Watch``, ``Persist``).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.chain import CallContext
from sdk.keyedlock import KeyedLock
from sdk.registry.core import RegistryCursor, RegistryElement
from sdk.registry.kinds import RecordKind
from sdk.security import audit
from sdk.security.peer import identity_of

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)

ANONYMOUS = "(anonymous)"


def _caller(ctx: CallContext) -> str | None:
    """The caller's owner key; None for trusted in-process calls."""
    if not ctx.peer:
        return None
    return identity_of(ctx.peer) or ANONYMOUS


class Ownership(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, kind: RecordKind[M]) -> None:
        self.kind: RecordKind[M] = kind
        self._owners: dict[str, str] = {}
        self._serial = KeyedLock()

    def owner(self, name: str) -> str | None:
        """The owner of a record, or None when nobody holds it."""
        return self._owners.get(name)

    def _check(self, name: str, caller: str, action: str) -> None:
        owner = self._owners.get(name)
        if owner is not None and owner != caller:
            raise audit.denied(
                "ownership",
                f"{self.kind.title} {name!r} belongs to {owner}: {caller} may not {action} it",
                caller=caller, owner=owner,
            )

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        caller = _caller(next.ctx)
        if caller is None:
            return await next.register(record)
        async with self._serial(record.name):
            self._check(record.name, caller, "change")
            stored = await next.register(record)
            self._owners.setdefault(record.name, caller)
            return stored

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        caller = _caller(next.ctx)
        async with self._serial(record.name):
            if caller is not None:
                self._check(record.name, caller, "unregister")
            await next.unregister(record)
            self._owners.pop(record.name, None)
