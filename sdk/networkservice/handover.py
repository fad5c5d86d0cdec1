"""Elements ``HandOver`` and ``CheckHandover``: the two sides of a node manager's interposed
forwarder. What the node manager handed to its forwarders is recorded, so a request that claims
to come back from one can be checked against it.

A request reaches an endpoint only by this nsmgr's own choice: the nsmgr sends the connection to
one of its forwarders, which sends it back (its own segment added) to be delivered to the chosen
endpoint. A workload that named a forwarder as the previous segment of its own path would skip
the choice and the authorization in front of it; these records stop that.

Contract of the store :class:`Handovers`: ``hand(own_id, handover)`` records that the connection
whose segment at this nsmgr has id ``own_id`` went to ``handover.forwarder`` for
``handover.endpoint`` and ``handover.service`` and returns an undo for an attempt that failed (the
previous record, if any, comes back); ``drop(own_id)`` forgets it (close). ``check(conn, signer,
forwarder_id)`` accepts a request from a forwarder only when its path holds, two segments before
this hop, this nsmgr's own segment of a handed connection, sent to that forwarder for the same
endpoint and service, and, when the path was verified (``signer``: the previous segment's SPIFFE
ID), signed by the identity the forwarder registered with (``forwarder_id``). Otherwise it raises
``PermissionDenied`` (counted as a refusal of kind ``handover``).


``HandOver(handovers)`` sits last before the forwarder is called (behind ``SelectForwarder``,
whose ``ctx.values[FORWARDER]`` it reads): it records the handover for this hop's segment id
before the request goes on, puts the previous record back when the request fails, and forgets
it on close. ``CheckHandover(handovers, forwarders)`` sits first in the branch that serves
requests coming back from a forwarder: it refuses the request unless it continues a handed
connection (close passes through).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.networkservice.forwarder import FORWARDER, Forwarders
from sdk.networkservice.token import PATH_IDS
from sdk.security import audit


class Handover(NamedTuple):
    forwarder: str
    endpoint: str
    service: str


class Handovers:
    """See the module docstring."""

    def __init__(self) -> None:
        self._handed: dict[str, Handover] = {}

    def __len__(self) -> int:
        return len(self._handed)

    def hand(self, own_id: str, handover: Handover) -> Callable[[], None]:
        before = self._handed.get(own_id)
        self._handed[own_id] = handover

        def undo() -> None:
            if before is None:
                self._handed.pop(own_id, None)
            else:
                self._handed[own_id] = before

        return undo

    def drop(self, own_id: str) -> None:
        self._handed.pop(own_id, None)

    def check(self, conn: Connection, signer: str, forwarder_id: str) -> None:
        segments, index = conn.path.path_segments, conn.path.index
        forwarder = segments[index - 1].name
        own = segments[index - 2] if index >= 2 else None
        handed = (
            self._handed.get(own.id)
            if own is not None and own.name == segments[index].name
            else None
        )
        if handed != Handover(forwarder, conn.network_service_endpoint_name,
                              conn.network_service):
            raise audit.denied(
                "handover",
                f"the request comes from forwarder {forwarder!r} but continues no connection "
                "this nsmgr handed to it for this endpoint and service; requests reach "
                "endpoints only through the nsmgr's own choice (send it to the nsmgr without "
                "forwarder segments)",
                forwarder=forwarder, endpoint=conn.network_service_endpoint_name,
            )
        if signer and forwarder_id and signer != forwarder_id:
            raise audit.denied(
                "handover",
                f"the segment of forwarder {forwarder!r} is signed by {signer}, not by the "
                f"forwarder's own identity {forwarder_id}",
                forwarder=forwarder, signer=signer,
            )


class HandOver(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, handovers: Handovers) -> None:
        self.handovers = handovers

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = request.connection
        forwarder = next.ctx.values[FORWARDER]
        undo = self.handovers.hand(conn.id, Handover(  # conn.id: this hop's segment id
            forwarder, conn.network_service_endpoint_name, conn.network_service))
        try:
            return await next.request(request)
        except BaseException:
            undo()
            raise

    async def close(self, conn: Connection, next: NSCursor) -> None:
        self.handovers.drop(conn.id)
        await next.close(conn)


class CheckHandover(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, handovers: Handovers, forwarders: Forwarders) -> None:
        self.handovers = handovers
        self.forwarders = forwarders

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        conn = request.connection
        signers = next.ctx.values.get(PATH_IDS) or []
        forwarder = conn.path.path_segments[conn.path.index - 1].name
        self.handovers.check(
            conn, signers[-1] if signers else "", self.forwarders.spiffe_id(forwarder)
        )
        return await next.request(request)
