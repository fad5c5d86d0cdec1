"""Element ``Switch``: send each connection through one of several sub-chains.

Contract: a request goes through the elements of the first :class:`Case` whose condition holds
for its connection (else through ``default``), then on through the rest of the chain. The branch
is kept in the connection's metadata: a refresh that the conditions send down another branch than
the one its connection was built on is refused (``InvalidArgument``: a connection cannot change
its kind), and the close takes the remembered branch even when the condition would now say
otherwise (a forwarder that died meanwhile, say). A close of a connection this hop never
requested takes the branch its condition selects. Place it behind ``Metadata``. Holds nothing
itself; undoes nothing (the branch's elements undo their own work).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.chain import Key
from sdk.errors import InvalidArgument
from sdk.networkservice.core import NetworkServiceElement, NSCursor

Condition = Callable[[Connection], bool]


@dataclass(frozen=True)
class Case:
    """A branch: the condition on the connection and the elements that handle it."""

    when: Condition
    elements: Sequence[NetworkServiceElement]


class Switch(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, *cases: Case, default: Sequence[NetworkServiceElement] = ()) -> None:
        self.branches: tuple[Sequence[NetworkServiceElement], ...] = (
            *(case.elements for case in cases), default,
        )
        self.conditions = tuple(case.when for case in cases)
        self._taken: Key[int] = Key("switch.branch")  # one key per switch: switches may nest

    def _select(self, conn: Connection) -> int:
        for index, condition in enumerate(self.conditions):
            if condition(conn):
                return index
        return len(self.conditions)

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        md = next.ctx.metadata
        branch = self._select(request.connection)
        if md.get(self._taken, branch) != branch:
            raise InvalidArgument(
                "connection.path",
                "this refresh arrives by another way than its connection was made (e.g. from a "
                "forwarder for a connection a client made): send it along its own path",
            )
        reply = await next.through(self.branches[branch]).request(request)
        md[self._taken] = branch
        return reply

    async def close(self, conn: Connection, next: NSCursor) -> None:
        branch = next.ctx.metadata.get(self._taken)
        if branch is None:
            branch = self._select(conn)
        await next.through(self.branches[branch]).close(conn)
