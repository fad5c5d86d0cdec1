"""Element ``ForgetUnreachable``: a next hop that did not answer gets a fresh channel next time.

Contract: on request, when the call behind it fails with :class:`sdk.errors.Unavailable` (the
next hop, ``ctx.values[CLIENT_URL]``, could not be reached: it died or is restarting), the
pooled channel to it is forgotten (:meth:`sdk.channels.ChannelPool.forget`) and the call is made
once more on a fresh channel; its error, if any, goes back unchanged. So a hop that came back is
reached at once instead of after the old channel's reconnect back-off (up to minutes), which
another user of the pool (a monitor stream re-subscribing) may have restarted meanwhile (the
pool's channels must not share connections: gRPC's global subchannel pool would hand the fresh
channel the old back-off). Close passes through. Place it in front of ``Connect``, behind the
element that chose the next hop. Keeps nothing.
"""

from __future__ import annotations

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.channels import ChannelPool
from sdk.errors import Unavailable
from sdk.networkservice.client import CLIENT_URL
from sdk.networkservice.core import NetworkServiceElement, NSCursor


class ForgetUnreachable(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, pool: ChannelPool) -> None:
        self.pool = pool

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        sent = NetworkServiceRequest()
        sent.CopyFrom(request)  # what the failed call was given (the elements behind may change it)
        try:
            return await next.request(request)
        except Unavailable:
            target = next.ctx.values.get(CLIENT_URL)
            if not target:
                raise
            self.pool.forget(target)
        return await next.request(sent)
