"""Element ``AcceptIntoRouter``: a served host's proxy endpoint takes each vWire into the host's
router namespace.

Contract: the request must offer KERNEL (else ``InvalidArgument`` naming
``mechanism_preferences``); the returned connection's mechanism is KERNEL with the router
namespace (``inodeURL``) and an interface name unique per connection (``nsm`` + 8 hex digits of
the connection id), so every client's vWire is its own interface there and the router forwards
between them and the host's WireGuard device. Terminal: place it last. (The same rule as the
reference endpoint's ``AcceptKernel``, which a process package may not import.)
"""

from __future__ import annotations

import hashlib

from api.mechanisms.kernel import KernelMechanism, is_kernel
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import InvalidArgument
from sdk.networkservice.core import NetworkServiceElement, NSCursor


class AcceptIntoRouter(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, netns_url: str) -> None:
        self.netns_url = netns_url

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        if not any(is_kernel(m) for m in request.mechanism_preferences):
            raise InvalidArgument(
                "mechanism_preferences", "this endpoint accepts only the KERNEL mechanism")
        conn = await next.request(request)
        name = "nsm" + hashlib.sha256(conn.id.encode()).hexdigest()[:8]
        conn.mechanism.CopyFrom(KernelMechanism(self.netns_url, name).to_proto())
        return conn
