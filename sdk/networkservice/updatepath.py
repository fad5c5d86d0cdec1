"""Element ``UpdatePath``: puts this hop into the connection's path, NSM style.

Contract: on request, the path segment at ``path.index`` belongs to this hop afterwards:
- an empty path gets a first segment named ``name`` (keeping a caller-given connection id, or a
  new UUID);
- if the current segment is already ours (a refresh), it is kept;
- if the segment after the current one is ours (a refresh arriving from the previous hop), the
  index moves onto it;
- otherwise a new segment (``name``, new UUID) is appended after the current one.
The connection's ``id`` is set to our segment's id while the request travels on, and the index is
put back to our segment on the way back. Close moves the index onto our segment (each hop
closes its own id) and never adds a segment; a close whose path has no segment of this hop ends
here, successfully: this hop has no part in that connection (closing whatever id it carries
would close another hop's connection, or meet this hop's own close further down the path and
wait for it until the deadline). Place it after ``Begin`` on clients, before ``Begin`` on
servers.

A path whose index points past its segments, in which two segments carry the same id, or with
an ``expires`` that is not a valid protobuf Timestamp is refused with ``InvalidArgument`` (request
and close): every hop keys its state by its segment's id, so a repeated id would make a hop meet
its own call again further down the path and wait for itself until the deadline; and an invalid
Timestamp cannot be read (timeouts) nor shown (``nsmctl``, JSON) once stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from api.proto.connection_pb2 import Connection, PathSegment
from api.proto.networkservice_pb2 import NetworkServiceRequest
from sdk.errors import InvalidArgument
from sdk.networkservice.core import NetworkServiceElement, NSCursor
from sdk.registry.validate import check_timestamp


def claim_segment(conn: Connection, name: str, create: bool = True) -> int | None:
    """Make ``conn.path`` point at this hop's segment, adding it when ``create``; returns its
    index, or None when the hop has no segment and ``create`` is false."""
    path = conn.path
    segments = path.path_segments
    _check_segments(segments)
    if not segments:
        if not create:
            return None
        segments.add(name=name, id=conn.id or str(uuid.uuid4()))
        path.index = 0
    elif path.index >= len(segments):
        raise InvalidArgument(
            "connection.path.index", f"is {path.index} but the path has {len(segments)} segments"
        )
    elif segments[path.index].name == name:
        pass
    elif path.index + 1 < len(segments) and segments[path.index + 1].name == name:
        path.index += 1
    elif create:
        del segments[path.index + 1 :]
        segments.add(name=name, id=str(uuid.uuid4()))
        path.index += 1
    else:
        return None
    conn.id = segments[path.index].id
    return path.index


def _check_segments(segments: Sequence[PathSegment]) -> None:
    first: dict[str, int] = {}
    for i, segment in enumerate(segments):
        if segment.HasField("expires"):
            check_timestamp(f"connection.path.path_segments[{i}].expires", segment.expires)
        if not segment.id:
            continue
        seen = first.setdefault(segment.id, i)
        if seen != i:
            raise InvalidArgument(
                f"connection.path.path_segments[{i}].id",
                f"repeats the id of segment {seen}: every segment needs an id of its own",
            )


class UpdatePath(NetworkServiceElement):
    """See the module docstring."""

    def __init__(self, name: str) -> None:
        if not name:
            raise InvalidArgument("name", "a hop needs a name for its path segment")
        self.name = name

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        index = claim_segment(request.connection, self.name)
        assert index is not None
        conn = await next.request(request)
        conn.path.index = index
        conn.id = conn.path.path_segments[index].id
        return conn

    async def close(self, conn: Connection, next: NSCursor) -> None:
        if claim_segment(conn, self.name, create=False) is None:
            return  # this hop has no part in the connection: nothing of it to close here
        await next.close(conn)
