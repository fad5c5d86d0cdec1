"""Registry element ``Publish``: a registration for another domain goes to the gateway after
this registry's own checks.

Contract (the domain registry, with ``ToGateway(..., defer=True)`` in front): a register or
unregister that ``ToGateway`` marked for domain ``F`` (``ctx.values[PUBLISH_TO]``; it passes the
record on in its local form, ``name`` for ``name@F``, so ``Validate``, ``RecordPathIds`` and
``AuthorizeRegistration`` in between check it as any registration) is sent to the gateway
(``gateway``, a terminal element such as ``RemoteRegistry``) named ``name@F`` again, and the
gateway's reply is returned; nothing is stored here and the elements behind do not run. Other
calls go on. Place it right behind ``AuthorizeRegistration`` (before ``Ownership``: the local
record of the same name, if any, belongs to whoever registered the endpoint here). Keeps
nothing.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.chain import Key
from sdk.registry.core import RegistryCursor, RegistryElement
from sdk.registry.domainnames import qualify

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)

#: The floating domain a registration is for (set by ``ToGateway`` with ``defer``).
PUBLISH_TO: Key[str] = Key("publish.domain")


class Publish(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(self, gateway: RegistryElement[M]) -> None:
        self.gateway: RegistryElement[M] = gateway

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        domain = next.ctx.values.get(PUBLISH_TO)
        if domain is None:
            return await next.register(record)
        return await self.gateway.register(qualify(record, domain), next)

    async def unregister(self, record: M, next: RegistryCursor[M]) -> None:
        domain = next.ctx.values.get(PUBLISH_TO)
        if domain is None:
            await next.unregister(record)
            return
        await self.gateway.unregister(qualify(record, domain), next)
