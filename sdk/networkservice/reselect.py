"""Element ``Reselect``: a client's ``RESELECT_REQUESTED`` asks for another endpoint.

Contract: on a request in state ``RESELECT_REQUESTED`` that names an endpoint, rules that
endpoint out for this request only (:func:`sdk.networkservice.select.exclude`) and clears the
name, so the selection behind chooses again. One client's word is no evidence against the
endpoint: nothing is reported to the shared circuit breaker, and other clients keep using it.
Other requests pass unchanged; close passes through. Place it where this hop chooses endpoints,
in front of ``CheckNamedEndpoint`` and ``RebuildOnHeal`` (which resets the state).
"""

from __future__ import annotations

from api.proto.connection_pb2 import RESELECT_REQUESTED, Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.select import exclude


class Reselect(NetworkServiceElement):
    """See the module docstring."""

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = request.connection
        if conn.state == RESELECT_REQUESTED and conn.network_service_endpoint_name:
            exclude(next.ctx, conn.network_service_endpoint_name)
            conn.network_service_endpoint_name = ""
        return await next.request(request)
