"""Element ``Metadata``: a per-connection dictionary that lives from first request to close.

Contract: while a request or close is inside the chain, ``next.ctx.metadata`` is the dictionary of
that connection id, the same object on every refresh, so elements behind it can keep what they
must undo later (keys, interface names, allocated addresses). A failed first request drops the
dictionary again; a close drops it after the elements behind it ran, even if they failed.
Place it right after ``Begin``.
"""

from __future__ import annotations

from typing import Any

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.networkservice.core import NetworkServiceElement, NSCursor


class Metadata(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self) -> None:
        self._by_id: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, conn_id: str) -> dict[str, Any] | None:
        """The metadata of a live connection, or None."""
        return self._by_id.get(conn_id)

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn_id = request.connection.id
        first = conn_id not in self._by_id
        next.ctx.metadata = self._by_id.setdefault(conn_id, {})
        try:
            return await next.request(request)
        except BaseException:
            if first:
                self._by_id.pop(conn_id, None)
            raise

    async def close(self, conn: Connection, next: NSCursor) -> None:
        next.ctx.metadata = self._by_id.get(conn.id, {})
        try:
            await next.close(conn)
        finally:
            self._by_id.pop(conn.id, None)
