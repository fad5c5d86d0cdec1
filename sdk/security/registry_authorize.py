"""Registry element ``AuthorizeRegistration``: only endpoint identities the policy allows may
register a network service or an endpoint for it.

Contract: on ``register``, the caller (its proven identity,
:func:`sdk.registry.registrant.registrant`: the registrant a registration token proved, else the
SPIFFE ID of an mTLS call; else anonymous) must be
allowed by the policy's ``registrations`` rules for every service the record names (an endpoint's
``network_service_names``, a NetworkService's own ``name``). A denial raises
:class:`sdk.errors.PermissionDenied` with the policy's reason, logged and counted
(``vwire_authz_denied_total{kind="register"}``); nothing is stored or announced. In-process calls
(empty ``ctx.peer``) are trusted. With ``only_with_rules`` (the nsmgr, whose policy file may
be written for requests alone) a policy without any ``registrations`` rule leaves registrations
to the domain registry's policy instead of denying them all. Find and unregister pass through
(unregister is guarded by :class:`sdk.registry.ownership.Ownership`). Place it after
``Validate``, before ``Ownership`` (in the nsmgr: after ``Ownership`` and the forwarder
records, see :mod:`sdk.registry.workloads`).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.registry.core import RegistryCursor, RegistryElement
from sdk.registry.registrant import registrant
from sdk.security import audit
from sdk.security.policy import PolicySource

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)


class AuthorizeRegistration(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, policy: PolicySource, only_with_rules: bool = False) -> None:
        self.policy = policy
        self.only_with_rules = only_with_rules

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        if next.ctx.peer:
            caller = registrant(next.ctx)
            services = (
                list(record.network_service_names)
                if isinstance(record, NetworkServiceEndpoint) else [record.name]
            )
            policy = self.policy.policy()
            if self.only_with_rules and not policy.registrations:
                return await next.register(record)
            for service in services:
                decision = policy.explain_registration(caller, service)
                if not decision.allowed:
                    raise audit.denied(
                        "register", decision.reason, caller=caller, peer=next.ctx.peer,
                        record=record.name,
                    )
        return await next.register(record)
