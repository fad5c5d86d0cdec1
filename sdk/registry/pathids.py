"""Registry element ``RecordPathIds``: a registration carries the SPIFFE IDs it passed through.

``path_ids`` of a NetworkServiceEndpoint lists, in order, the SPIFFE ID of the process that
registered the record and of every registry hop it went through (the node's nsmgr). The fabric
reads them to know who it will talk to — the audiences of path tokens
(:mod:`sdk.networkservice.token`): in nsmgr, behind this element, ``path_ids[-2]`` is the local
endpoint (or forwarder) that registered (:func:`registrant_id`); in the domain registry,
``path_ids[-1]`` is the nsmgr whose URL the record carries (:func:`last_id`).

Contract, on register:

* a caller with a SPIFFE ID (mTLS) must be the last ID of a non-empty ``path_ids``, else
  :class:`sdk.errors.PermissionDenied` (nobody may claim to speak for another identity); an
  empty ``path_ids`` gets the caller's ID;
* then, when this process has an identity (``source``), its own ID is appended unless it is
  already last (refreshes are idempotent).

The reply carries the result, so a registrant learns its registrar's identity from it. Find and
unregister pass through. Place it after ``Validate``.
"""

from __future__ import annotations

from api.proto.registry_pb2 import NetworkServiceEndpoint
from sdk.registry.core import RegistryCursor, RegistryElement
from sdk.security import audit
from sdk.security.peer import identity_of
from sdk.security.source import SvidSource


def registrant_id(record: NetworkServiceEndpoint) -> str:
    """Behind :class:`RecordPathIds` of a registrar with an identity: the SPIFFE ID of whoever
    handed it ``record`` — the entry before the registrar's own, last one ('' when none)."""
    return record.path_ids[-2] if len(record.path_ids) >= 2 else ""


def last_id(record: NetworkServiceEndpoint) -> str:
    """The SPIFFE ID of the hop that reaches ``record``'s URL ('' when unknown)."""
    return record.path_ids[-1] if record.path_ids else ""


class RecordPathIds(RegistryElement[NetworkServiceEndpoint]):
    """See the module docstring."""

    def __init__(self, source: SvidSource | None = None) -> None:
        self.source = source

    async def register(
        self, record: NetworkServiceEndpoint, next: RegistryCursor[NetworkServiceEndpoint]
    ) -> NetworkServiceEndpoint:
        caller = identity_of(next.ctx.peer)
        if caller is not None:
            if not record.path_ids:
                record.path_ids.append(caller)
            elif record.path_ids[-1] != caller:
                raise audit.denied(
                    "register",
                    f"path_ids ends with {record.path_ids[-1]} but the caller is {caller}: "
                    "a registrar may only append its own identity",
                    client=caller, peer=next.ctx.peer, endpoint=record.name,
                )
        if self.source is not None:
            own = str(self.source.current().spiffe_id)
            if last_id(record) != own:
                record.path_ids.append(own)
        return await next.register(record)
