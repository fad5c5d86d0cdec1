"""A stand-in for everything after a forwarder's ``Xconnect`` in unit tests."""

from __future__ import annotations

from api.proto.connection_pb2 import Connection, Mechanism
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.networkservice.core import NetworkServiceElement, NSCursor


class FarSide(NetworkServiceElement):
    """Answers every request with ``mechanism`` and, when the request has none, the addresses
    ``client``/``endpoint``; adds its own path segment; counts closes."""

    def __init__(self, mechanism: Mechanism, client: str = "10.0.0.1/24",
                 endpoint: str = "10.0.0.2/24") -> None:
        self.mechanism = mechanism
        self.client, self.endpoint = client, endpoint
        self.closes = 0

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = Connection()
        conn.CopyFrom(request.connection)
        conn.mechanism.CopyFrom(self.mechanism)
        ip = conn.context.ip_context
        if not ip.src_ip_addrs:
            ip.src_ip_addrs.append(self.client)
            ip.dst_ip_addrs.append(self.endpoint)
        conn.path.path_segments.add(name="fwd", id=conn.id)
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        self.closes += 1
