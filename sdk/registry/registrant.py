"""Registry element ``VerifyRegistrant``: who is registering, proven, not claimed.

A registry server behind a Unix socket (the nsmgr's) cannot see who calls it: gRPC Python offers
neither TLS on that socket nor the peer's ``SO_PEERCRED``, and ``path_ids`` are only what the
caller wrote. So a registrant proves itself the way requesters do with path tokens
(:mod:`sdk.security.token`): with a **registration token**, a JWS signed with its SVID key and
sent in the gRPC metadata entry :data:`TOKEN_HEADER`. The token's claims bind it to one call:

* ``aud`` is :data:`AUDIENCE` (not a SPIFFE ID, so a registration token is never a valid path
  token and a path token is never a valid registration token);
* ``cid`` is :func:`binding`: the action (``register``/``unregister``), the record kind and the
  SHA-256 of the record exactly as sent, so the token authorises that one record and nothing else
  (another URL, name, service or label needs a new signature);
* ``exp`` is at most :data:`LIFETIME` seconds after signing, and the signer's certificate must
  verify now against this process's bundle of the trust domain the signer's ID names (its own,
  or a federated one: :attr:`sdk.security.source.Material.trust`).

:func:`attach` (used by :class:`sdk.registry.client.RemoteRegistry` when given an SVID source)
makes the metadata; :class:`sdk.registry.server.RegistryServicer` hands the received value to the
chain in ``ctx.values[sdk.registry.server.TOKEN]``.

Contract of the element, on ``register`` and ``unregister`` (``find`` passes through: reads are
open): the registrant is the caller's TLS identity when the call has one (mTLS; a token, if also
sent, must then be that identity's), else the signer of a valid registration token for this very
record. It is put in ``ctx.values[REGISTRANT]`` for the elements behind (path IDs, ownership,
policy, forwarder identities). Without a valid proof the call raises
:class:`sdk.errors.Unauthenticated` naming what is missing or wrong (or PermissionDenied for a
token bound to another record or audience), logged and counted as a ``register`` refusal, and
goes no further. In-process calls (empty ``ctx.peer``) are trusted and pass. Without an SVID
source (a development setup with no identities at all) nothing can be verified and callers pass
anonymous. Place it first in a registry chain served to workloads (before ``Validate``, which
may normalise the record and so change its hash). Nothing to undo: it changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.chain import CallContext, Key
from sdk.errors import FabricError, PermissionDenied, Unauthenticated
from sdk.registry.core import RegistryCursor, RegistryElement
from sdk.registry.kinds import RecordKind
from sdk.registry.server import TOKEN, TOKEN_HEADER
from sdk.security import audit, token
from sdk.security.peer import identity_of
from sdk.security.source import SvidSource

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)

#: The audience of every registration token (deliberately not a SPIFFE ID).
AUDIENCE = "vwire:registration"
#: Longest life of a registration token, seconds: it is made for one call.
LIFETIME = 60.0

#: The registrant's verified SPIFFE ID (set by :class:`VerifyRegistrant`).
REGISTRANT: Key[str] = Key("registrant.spiffe_id")


def binding(action: str, kind: RecordKind[M], record: M) -> str:
    """What a registration token authorises: ``registry/<action>/<kind>/<sha256 of record>``."""
    digest = hashlib.sha256(record.SerializeToString(deterministic=True)).digest()
    text = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return f"registry/{action}/{kind.key}/{text}"


def attach(source: SvidSource, action: str, kind: RecordKind[M], record: M) -> tuple[
        tuple[str, str], ...]:
    """gRPC metadata proving that ``source``'s identity sends ``record`` for ``action``."""
    signed, _ = token.sign(
        source.current().svid, AUDIENCE, binding(action, kind, record), lifetime=LIFETIME
    )
    return ((TOKEN_HEADER, signed),)


def registrant(ctx: CallContext) -> str | None:
    """The caller's verified identity: what :class:`VerifyRegistrant` proved, else the TLS
    identity of the call (None: anonymous or in-process)."""
    return ctx.values.get(REGISTRANT) or identity_of(ctx.peer)


class VerifyRegistrant(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, kind: RecordKind[M], source: SvidSource | None) -> None:
        self.kind: RecordKind[M] = kind
        self.source = source

    def _verify(self, action: str, record: M, ctx: CallContext) -> None:
        if not ctx.peer or self.source is None:
            return
        tls = identity_of(ctx.peer)
        sent = ctx.values.get(TOKEN)
        if not sent:
            if tls is not None:
                ctx.values[REGISTRANT] = tls
                return
            raise audit.refused("register", Unauthenticated(
                f"{action} of {self.kind.title} {record.name!r}: the caller did not prove who "
                f"it is; sign the record with your SVID (gRPC metadata {TOKEN_HEADER!r}, as "
                "sdk.registry.client.RemoteRegistry(kind, channel, svids) does), i.e. run the "
                "registrant with an SVID directory"
            ), peer=ctx.peer, record=record.name)
        try:
            claims = token.verify(
                sent, self.source.current().trust, audience=AUDIENCE,
                segment_id=binding(action, self.kind, record),
            )
        except PermissionDenied as exc:
            raise audit.denied(
                "register",
                f"registration token does not authorise this {action} of {self.kind.title} "
                f"{record.name!r} ({exc}): sign exactly the record you send, for this call",
                peer=ctx.peer, record=record.name,
            ) from None
        except FabricError as exc:
            raise audit.refused("register", Unauthenticated(
                f"registration token for {self.kind.title} {record.name!r} rejected: {exc}"
            ), peer=ctx.peer, record=record.name) from None
        if tls is not None and claims.subject != tls:
            raise audit.denied(
                "register",
                f"registration token is signed by {claims.subject} but the caller is {tls}: "
                "sign with the SVID you connect with",
                peer=ctx.peer, record=record.name,
            )
        ctx.values[REGISTRANT] = claims.subject

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        self._verify("register", record, next.ctx)
        return await next.register(record)

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        self._verify("unregister", record, next.ctx)
        await next.unregister(record)
