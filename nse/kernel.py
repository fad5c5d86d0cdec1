"""Element ``AcceptKernel``: the endpoint accepts a KERNEL mechanism into its own namespace.

Contract: the request must offer KERNEL (else ``InvalidArgument`` naming
``mechanism_preferences``); the returned connection's mechanism is KERNEL with this endpoint's
namespace (``inodeURL``) and an interface name unique per connection (``nsm`` + 8 hex digits of
the connection id, so the forwarder's interfaces never clash inside the endpoint's namespace).
Terminal for requests on an endpoint: place it last.
"""

from __future__ import annotations

import hashlib

from api.mechanisms.kernel import KernelMechanism, is_kernel
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import InvalidArgument
from sdk.networkservice.core import NetworkServiceElement, NSCursor


def interface_name(conn_id: str) -> str:
    return "nsm" + hashlib.sha256(conn_id.encode()).hexdigest()[:8]


class AcceptKernel(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, netns_url: str) -> None:
        self.netns_url = netns_url

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        if not any(is_kernel(m) for m in request.mechanism_preferences):
            raise InvalidArgument(
                "mechanism_preferences", "this endpoint accepts only the KERNEL mechanism"
            )
        conn = await next.request(request)
        mechanism = KernelMechanism(self.netns_url, interface_name(conn.id))
        conn.mechanism.CopyFrom(mechanism.to_proto())
        return conn
