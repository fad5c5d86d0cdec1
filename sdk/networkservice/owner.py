"""Element ``ConnectionOwner``: a connection belongs to the client that made it.

Contract: with a verified path (``ctx.values[CLIENT_ID]``, set by ``VerifyPath`` in front), the
first request of a connection id records its client identity in the connection's metadata; a
later request or close of the same id from another client identity — a workload that learnt the
id and signs a path of its own for it — is refused with ``PermissionDenied`` (counted as a
``connection`` denial) and nothing behind it runs. Calls without a verified client (no SVIDs, or
made inside this process: a timeout, a dead endpoint) pass. Place it right behind ``Metadata``.
"""

from __future__ import annotations

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import CallContext, Key
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.token import CLIENT_ID
from sdk.security import audit

#: Metadata: the client identity the connection belongs to.
OWNER: Key[str] = Key("owner.client")


def _check(ctx: CallContext, conn_id: str, action: str) -> None:
    client = ctx.values.get(CLIENT_ID)
    if not client:
        return
    owner = ctx.metadata.get(OWNER)
    if owner is None:
        ctx.metadata[OWNER] = client
    elif owner != client:
        raise audit.denied(
            "connection",
            f"connection {conn_id} belongs to {owner}, not to {client}: a client may {action} "
            "only its own connections",
            client=client, owner=owner,
        )


class ConnectionOwner(NetworkServiceElement):
    """See the module docstring."""

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        _check(next.ctx, request.connection.id, "refresh")
        return await next.request(request)

    async def close(self, conn: Connection, next: NSCursor) -> None:
        _check(next.ctx, conn.id, "close")
        await next.close(conn)
