"""Element ``RequireRelays``: only node managers and forwarders may relay a request.

Contract: on a request whose path was verified (``ctx.values[PATH_IDS]``, set by ``VerifyPath``
in front), every segment after the first must be signed by a relay identity — a SPIFFE ID of
kind ``nsmgr``, ``forwarder`` or ``gateway`` (``spiffe://<trust-domain>/nsmgr/<name>``; a domain's
gateway relays requests between domains); the first segment is
the client's. A path that a workload extended itself (to pose as a relayed request and skip the
authorization and endpoint choice made where requests enter the fabric) is refused with
``PermissionDenied`` naming the segment and its signer, and counted as a ``relay`` denial;
nothing behind it runs. Without a verified path (no SVIDs: development mode) it passes. Close
passes through (``VerifyPath`` checks closes). Place it right behind ``VerifyPath``.
"""

from __future__ import annotations

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import InvalidArgument
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.token import PATH_IDS
from sdk.security import audit
from sdk.security.spiffe import SpiffeId

#: The kinds of identity that may add segments after the client's.
RELAY_KINDS = frozenset({"nsmgr", "forwarder", "gateway"})


def is_relay(identity: str) -> bool:
    """Whether ``identity`` is a SPIFFE ID of a node manager, a forwarder or a gateway."""
    try:
        return SpiffeId.parse(identity).kind in RELAY_KINDS
    except InvalidArgument:
        return False


class RequireRelays(NetworkServiceElement):
    """See the module docstring."""

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        subjects = next.ctx.values.get(PATH_IDS) or []
        for index, subject in enumerate(subjects[1:], start=1):
            if not is_relay(subject):
                segment = request.connection.path.path_segments[index].name
                raise audit.denied(
                    "relay",
                    f"path segment {index} ({segment!r}) is signed by {subject}, which may not "
                    "relay requests: only node managers, forwarders and gateways add segments "
                    "after the client's; send the request to the node manager with your own "
                    "segment only",
                    signer=subject, segment=str(index),
                )
        return await next.request(request)
