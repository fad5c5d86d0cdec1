"""Registry element ``Ownership``: only the identity that registered a record may change it.

Contract: the first successful ``register`` of a name makes the caller the record's owner. The
caller is its proven identity (:func:`sdk.registry.registrant.registrant`: the registrant a
registration token proved, else the SPIFFE ID of an mTLS call); callers without one (e.g. over a
Unix socket without a token) are "anonymous" and share one owner. A later ``register`` (refresh
or change) or ``unregister`` of that name by anyone else raises
:class:`sdk.errors.PermissionDenied`, logged and counted
(``vwire_authz_denied_total{kind="ownership"}``), and goes no further. In-process calls (empty
``ctx.peer``, e.g. the expiry sweeper) are trusted. A successful unregister forgets the owner, so
the name is free again. Calls for one name are serialised, so two identities racing for a free
name cannot both win. The owner of a register is handed on in ``ctx.values[OWNER]``, for
``Persist`` to store it with the record and for ``Quota`` to count it.

Owners are remembered in memory and, for names this process has not seen, asked of ``recall``
(e.g. the owners ``Persist`` stored with the records, so ownership survives a registry restart;
an nsmgr recalls the registrant from the ``path_ids`` the domain registry keeps for it). Without
``recall`` the first identity that registers a name after a restart owns it. Place it after
``Validate`` (names are valid) and before the elements that count, store or announce (``Quota``,
``Expire``, ``Watch``, ``Persist``). A refused call changes nothing; a failed register leaves
the owner as it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.chain import CallContext, Key
from sdk.keyedlock import KeyedLock
from sdk.registry.core import RegistryCursor, RegistryElement
from sdk.registry.kinds import RecordKind
from sdk.registry.registrant import registrant
from sdk.security import audit

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)

ANONYMOUS = "(anonymous)"

#: The owner of the record being registered (set by :class:`Ownership` for outside callers).
OWNER: Key[str] = Key("ownership.owner")


def _caller(ctx: CallContext) -> str | None:
    """The caller's owner key; None for trusted in-process calls."""
    if not ctx.peer:
        return None
    return registrant(ctx) or ANONYMOUS


class Ownership(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(
        self,
        kind: RecordKind[M],
        recall: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        self.kind: RecordKind[M] = kind
        self.recall = recall
        self._owners: dict[str, str] = {}
        self._serial = KeyedLock()

    def owner(self, name: str) -> str | None:
        """The owner of a record this process has seen, or None when nobody holds it."""
        return self._owners.get(name)

    async def _owner(self, name: str) -> str | None:
        owner = self._owners.get(name)
        if owner is None and self.recall is not None:
            owner = await self.recall(name)
            if owner is not None:
                self._owners[name] = owner
        return owner

    async def _check(self, name: str, caller: str, action: str) -> None:
        owner = await self._owner(name)
        if owner is not None and owner != caller:
            raise audit.denied(
                "ownership",
                f"{self.kind.title} {name!r} belongs to {owner}: {caller} may not {action} it "
                "(choose another name, or unregister it as its owner first)",
                caller=caller, owner=owner,
            )

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        caller = _caller(next.ctx)
        if caller is None:
            return await next.register(record)
        async with self._serial(record.name):
            await self._check(record.name, caller, "change")
            next.ctx.values[OWNER] = caller
            stored = await next.register(record)
            self._owners.setdefault(record.name, caller)
            return stored

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        caller = _caller(next.ctx)
        async with self._serial(record.name):
            if caller is not None:
                await self._check(record.name, caller, "unregister")
            await next.unregister(record)
            self._owners.pop(record.name, None)
