"""Registry element ``ReservedService``: a service only one kind of identity may register.

The nsmgr treats endpoints of the service ``forwarder`` as its node's forwarders and sends
requests, with their path tokens, through whichever it picks; so a workload that could register
one would sit in the middle of every connection of the node. Contract, on register: a record
naming the reserved ``service`` must name it alone (``network_service_names == [service]``),
and its registrant (:func:`sdk.registry.registrant.registrant`) must be a SPIFFE ID of this
trust domain whose kind (first path segment) is ``kind``
(``spiffe://<trust domain>/forwarder/<name>``); otherwise :class:`sdk.errors.PermissionDenied`
names the rule, logged and counted as a ``register`` refusal, and nothing is stored. Records of
other services, finds, unregisters (guarded by ``Ownership``) and in-process calls pass. Without
an SVID ``source`` (no identities anywhere, development only) the kind cannot be proven and the
check is skipped. Place it after ``VerifyRegistrant`` and before the element that keeps the
reserved records (``LocalForwarders``). Nothing to undo: it changes nothing.
"""

from __future__ import annotations

from api.proto.registry_pb2 import NetworkServiceEndpoint
from sdk.errors import FabricError
from sdk.registry.core import RegistryCursor, RegistryElement
from sdk.registry.registrant import registrant
from sdk.security import audit
from sdk.security.source import SvidSource
from sdk.security.spiffe import SpiffeId


class ReservedService(RegistryElement[NetworkServiceEndpoint]):
    """See the module docstring."""

    def __init__(self, service: str, kind: str, source: SvidSource | None) -> None:
        self.service = service
        self.kind = kind
        self.source = source

    def _allowed(self, caller: str | None) -> bool:
        if caller is None or self.source is None:
            return False
        try:
            spiffe_id = SpiffeId.parse(caller)
        except FabricError:
            return False
        own = self.source.current().spiffe_id
        return spiffe_id.trust_domain == own.trust_domain and spiffe_id.kind == self.kind

    async def register(
        self, record: NetworkServiceEndpoint, next: RegistryCursor[NetworkServiceEndpoint]
    ) -> NetworkServiceEndpoint:
        names = list(record.network_service_names)
        if self.service in names and next.ctx.peer and self.source is not None:
            caller = registrant(next.ctx)
            if names != [self.service]:
                raise audit.denied(
                    "register",
                    f"{record.name!r} lists {self.service!r} with other services: a "
                    f"{self.service} registers the service {self.service!r} alone",
                    client=caller, peer=next.ctx.peer, record=record.name,
                )
            if not self._allowed(caller):
                raise audit.denied(
                    "register",
                    f"only {self.kind} identities (spiffe://<trust domain>/{self.kind}/<name>) "
                    f"may register the service {self.service!r}; "
                    f"{caller or 'an unidentified caller'} is not one",
                    client=caller, peer=next.ctx.peer, record=record.name,
                )
        return await next.register(record)
