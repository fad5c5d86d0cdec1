"""Registry element ``RecordPathIds``: a registration carries the SPIFFE IDs it passed through.

``path_ids`` of a NetworkServiceEndpoint lists, in order, the SPIFFE ID of the process that
registered the record and of every registry hop it went through (the node's nsmgr). The fabric
reads them to know who it will talk to — the audiences of path tokens
(:mod:`sdk.networkservice.token`): in nsmgr, behind this element, ``path_ids[-2]`` is the local
endpoint (or forwarder) that registered (:func:`registrant_id`); in the domain registry,
``path_ids[-1]`` is the nsmgr whose URL the record carries (:func:`last_id`).

Contract, on register (of either record kind):

* the caller is its proven identity: the registrant :class:`sdk.registry.registrant.
  VerifyRegistrant` verified, else its TLS identity (mTLS);
* a caller with an identity must be the last ID of a non-empty ``path_ids``, else
  :class:`sdk.errors.PermissionDenied` (nobody may claim to speak for another identity); an
  empty ``path_ids`` gets the caller's ID;
* with ``first_hop=True`` (a registrar that serves workloads directly, i.e. the nsmgr) the
  caller is the origin of the record: ``path_ids`` may only be empty, ``[caller]``, or
  ``[caller, own ID]`` (a registrant sending back an earlier reply); anything else, or any ID
  at all from a caller without a proven identity, is PermissionDenied naming the stranger;
* then, when this process has an identity (``source``), its own ID is appended unless it is
  already last (refreshes are idempotent).

The reply carries the result, so a registrant learns its registrar's identity from it. Find and
unregister pass through; a refused register changes nothing. Place it after ``Validate`` (and
after ``VerifyRegistrant`` where that runs).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.registry.core import RegistryCursor, RegistryElement
from sdk.registry.registrant import registrant
from sdk.security import audit
from sdk.security.source import SvidSource

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)


def registrant_id(record: NetworkService | NetworkServiceEndpoint) -> str:
    """Behind :class:`RecordPathIds` of a registrar with an identity: the SPIFFE ID of whoever
    handed it ``record`` — the entry before the registrar's own, last one ('' when none)."""
    return record.path_ids[-2] if len(record.path_ids) >= 2 else ""


def last_id(record: NetworkService | NetworkServiceEndpoint) -> str:
    """The SPIFFE ID of the hop that reaches ``record``'s URL ('' when unknown)."""
    return record.path_ids[-1] if record.path_ids else ""


class RecordPathIds(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, source: SvidSource | None = None, first_hop: bool = False) -> None:
        self.source = source
        self.first_hop = first_hop

    def _check_origin(self, record: M, caller: str | None, own: str | None, peer: str) -> None:
        allowed = [caller, own] if caller is not None else []
        ids = list(record.path_ids)
        if ids == allowed[: len(ids)]:
            return
        stranger = next(i for n, i in enumerate(ids) if n >= len(allowed) or i != allowed[n])
        who = caller or "a caller without a proven identity"
        raise audit.denied(
            "register",
            f"path_ids names {stranger} but {record.name!r} is registered by {who}: "
            "a workload registering through its node may name only itself (or nothing)",
            client=caller, peer=peer, record=record.name,
        )

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        caller = registrant(next.ctx)
        own = str(self.source.current().spiffe_id) if self.source is not None else None
        if self.first_hop and next.ctx.peer:
            self._check_origin(record, caller, own, next.ctx.peer)
        if caller is not None:
            if not record.path_ids:
                record.path_ids.append(caller)
            elif record.path_ids[-1] != caller and not (
                self.first_hop and list(record.path_ids) == [caller, own]
            ):
                raise audit.denied(
                    "register",
                    f"path_ids ends with {record.path_ids[-1]} but the caller is {caller}: "
                    "a registrar may only append its own identity",
                    client=caller, peer=next.ctx.peer, endpoint=record.name,
                )
        if own is not None and last_id(record) != own:
            record.path_ids.append(own)
        return await next.register(record)
