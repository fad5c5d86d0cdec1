"""Element ``FilterMechanisms``: offer the next hop only mechanisms of the class it needs.

Contract: keeps, of the request's mechanism preferences, those of class
``ctx.values[MECHANISM_CLASS]`` (``LOCAL`` for an endpoint on this node, ``REMOTE`` for one on
another, as ``RouteToEndpoint`` in front decided), in their order; raises ``InvalidArgument``
naming the missing class when none is left. Without a class set it passes the request
unchanged. Close passes through.
"""

from __future__ import annotations

from api.mechanisms import LOCAL, of_class
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import InvalidArgument
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.toendpoint import MECHANISM_CLASS


class FilterMechanisms(NetworkServiceElement):
    """See the module docstring."""

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        wanted = next.ctx.values.get(MECHANISM_CLASS)
        if wanted is not None:
            kept = of_class(list(request.mechanism_preferences), wanted)
            if not kept:
                where = "local" if wanted == LOCAL else "remote"
                raise InvalidArgument(
                    "mechanism_preferences",
                    f"the endpoint is {where} but no {wanted} mechanism was offered",
                )
            del request.mechanism_preferences[:]
            request.mechanism_preferences.extend(kept)
        return await next.request(request)
