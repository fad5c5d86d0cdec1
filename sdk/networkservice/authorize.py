"""Element ``Authorize``: only clients the policy allows may request a network service.

Contract: on request, asks the policy in force (:class:`sdk.security.policy.PolicySource`, re-read
when its file changes) whether the client may request ``connection.network_service`` with
``connection.labels``. The client is the first subject of the verified path
(``ctx.values[CLIENT_ID]``, set by :class:`sdk.networkservice.token.VerifyPath`, which must sit in
front), else the caller's own SPIFFE ID (``ctx.peer``), else anonymous. A denial raises
:class:`sdk.errors.PermissionDenied` with the policy's reason, is logged with the identities and
counted (``vwire_authz_denied_total{kind="request"}``); nothing behind it runs. Refreshes are
checked again, so a tightened policy takes effect at the next refresh. Close passes through: a
connection can always be closed.
"""

from __future__ import annotations

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.token import CLIENT_ID
from sdk.security import audit
from sdk.security.peer import identity_of
from sdk.security.policy import PolicySource


class Authorize(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, policy: PolicySource) -> None:
        self.policy = policy

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = request.connection
        client = next.ctx.values.get(CLIENT_ID) or identity_of(next.ctx.peer)
        decision = self.policy.policy().explain(client, conn.network_service, dict(conn.labels))
        if not decision.allowed:
            raise audit.denied(
                "request", decision.reason, client=client, peer=next.ctx.peer,
                service=conn.network_service,
            )
        return await next.request(request)
