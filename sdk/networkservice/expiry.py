"""Element ``SetExpiry``: stamps this hop's path segment with an expiry instant.

Contract: on request, the segment at ``path.index`` (this hop's: place it after ``UpdatePath``)
gets ``expires = now + lifetime``. The previous hop's ``Timeout`` closes the connection when that
instant passes without a refresh, so clients refresh well before it (see ``Refresh``). When path
tokens are signed, the token element sets ``expires`` instead and this element is not used.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import InvalidArgument
from sdk.networkservice.core import NetworkServiceElement, NSCursor


class SetExpiry(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, lifetime: float, clock: Callable[[], float] = time.time) -> None:
        if lifetime <= 0:
            raise InvalidArgument("lifetime", "must be a positive number of seconds")
        self.lifetime = lifetime
        self.clock = clock

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        path = request.connection.path
        path.path_segments[path.index].expires.FromNanoseconds(
            int((self.clock() + self.lifetime) * 1e9)
        )
        return await next.request(request)
