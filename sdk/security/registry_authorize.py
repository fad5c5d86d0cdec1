"""Registry element ``AuthorizeRegistration``: only endpoint identities the policy allows may
register a network service or an endpoint for it.

Contract: on ``register``, the caller (its SPIFFE ID from ``ctx.peer``, else anonymous) must be
allowed by the policy's ``registrations`` rules for every service the record names (an endpoint's
``network_service_names``, a NetworkService's own ``name``). A denial raises
:class:`sdk.errors.PermissionDenied` with the policy's reason, logged and counted
(``vwire_authz_denied_total{kind="register"}``); nothing is stored or announced. In-process calls
(empty ``ctx.peer``) are trusted. Find and unregister pass through (unregister is guarded by
:class:`sdk.registry.ownership.Ownership`). Place it after ``Validate``, before ``Ownership``.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.registry.core import RegistryCursor, RegistryElement
from sdk.security import audit
from sdk.security.peer import identity_of
from sdk.security.policy import PolicySource

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)


class AuthorizeRegistration(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, policy: PolicySource) -> None:
        self.policy = policy

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        if next.ctx.peer:
            caller = identity_of(next.ctx.peer)
            services = (
                list(record.network_service_names)
                if isinstance(record, NetworkServiceEndpoint) else [record.name]
            )
            policy = self.policy.policy()
            for service in services:
                decision = policy.explain_registration(caller, service)
                if not decision.allowed:
                    raise audit.denied(
                        "register", decision.reason, caller=caller, peer=next.ctx.peer,
                        record=record.name,
                    )
        return await next.register(record)
