"""Connections and path segments kept between calls, in a compact form.

A hop keeps copies of each connection between calls: the monitor's, the expiry timer's, what the
next hop answered, the path segments after its own. With a real path most of a connection is
its tokens (seven of ~1.6 KB), and most of a token is its header, which carries the signer's
certificate chain: the same text in every token one SVID signs. So a kept copy holds the
connection serialized *without* its tokens, and each token as its header text and the rest of
its text, both shared through one table (a header with every other kept token of the same
signer, the rest with the other copies of the same connection this process keeps: the
monitor's, the timer's, the next hop's answer, per pass). The table drops the texts nothing else
holds whenever it doubled in size, so it holds at most twice the texts kept at its last sweep,
or :data:`_SWEEP_MIN`; :func:`sys.intern` would keep them forever on Python 3.12. Store and
restore from one thread (the event loop's, where the chains run).

Contract: :meth:`StoredConnection.restore` (and :func:`restore_segments`) give back a message
equal to the one stored, every token the same text byte for byte (what goes on the wire does not
change); storing never changes the message it is given. Nothing is checked or parsed here: a
token that is not ``header.rest`` is kept whole. Storing and restoring cost a serialization and
a parse, as a serialized copy did.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

from api.proto.connection_pb2 import DOWN, Connection, Path, PathSegment

#: A kept token: its shared header and rest (``header + "." + rest``), or the whole text when it
#: has no ``.``; "" for a segment without a token.
_Token = tuple[str, str] | str

#: Kept texts by themselves: equal texts are handed out as one object. An entry that nothing else
#: holds any more is dropped by :func:`_sweep` once the table doubled since the last sweep.
_SHARED: dict[str, str] = {}
_SWEEP_MIN = 1024
_sweep_at = _SWEEP_MIN


def _sweep() -> None:
    """Drop the texts only this table holds (key and value: two references, plus the loop's and
    the call's). A text dropped while still held elsewhere is only no longer shared."""
    global _sweep_at
    for text in [text for text in _SHARED if sys.getrefcount(text) <= 4]:
        del _SHARED[text]
    _sweep_at = max(_SWEEP_MIN, 2 * len(_SHARED))


def _share(text: str) -> str:
    known = _SHARED.get(text)
    if known is not None:
        return known
    _SHARED[text] = text
    if len(_SHARED) >= _sweep_at:
        _sweep()
    return text


def _keep(token: str) -> _Token:
    header, dot, rest = token.partition(".")
    return (_share(header), _share(rest)) if dot else _share(token)


def _text(kept: _Token) -> str:
    return kept if isinstance(kept, str) else f"{kept[0]}.{kept[1]}"


def _clear(segments: Iterable[PathSegment]) -> None:
    for segment in segments:
        if segment.token:
            segment.token = ""


def _put_back(segments: Iterable[PathSegment], tokens: tuple[_Token, ...]) -> None:
    for segment, kept in zip(segments, tokens, strict=True):
        if kept:
            segment.token = _text(kept)


class StoredConnection:
    """One connection kept compactly (see the module docstring)."""

    __slots__ = ("_data", "_tokens", "down", "endpoint", "id", "path_ids", "path_names")

    def __init__(self, conn: Connection, keep_path: bool = False) -> None:
        """Keep ``conn``; with ``keep_path`` its segments' ids and names stay readable too."""
        segments = conn.path.path_segments
        self._tokens = tuple(_keep(segment.token) for segment in segments)
        bare = Connection()
        bare.CopyFrom(conn)  # a scratch copy loses the tokens; ``conn`` keeps them
        _clear(bare.path.path_segments)
        self._data = bare.SerializeToString()
        #: Readable without restoring the connection: its id, endpoint name, whether it is DOWN,
        #: and (``keep_path``) its path segments' ids and names, in order.
        self.id: str = conn.id
        self.endpoint: str = conn.network_service_endpoint_name
        self.down: bool = conn.state == DOWN
        self.path_ids: tuple[str, ...] = ()
        self.path_names: tuple[str, ...] = ()
        if keep_path:
            self.path_ids = tuple(segment.id for segment in segments)
            self.path_names = tuple(_share(segment.name) for segment in segments)

    def restore(self) -> Connection:
        """A new message equal to the stored connection."""
        conn = Connection.FromString(self._data)
        _put_back(conn.path.path_segments, self._tokens)
        return conn

    @property
    def size(self) -> int:
        """Bytes this copy holds of its own (its token texts are shared)."""
        return len(self._data)


class StoredSegments:
    """Path segments kept compactly, e.g. the ones after a hop's own (see the module
    docstring)."""

    __slots__ = ("_data", "_tokens")

    def __init__(self, segments: Sequence[PathSegment]) -> None:
        path = Path()
        path.path_segments.extend(segments)  # copies: the caller's segments stay as they are
        self._tokens = tuple(_keep(segment.token) for segment in path.path_segments)
        _clear(path.path_segments)
        self._data = path.SerializeToString()

    def restore(self) -> list[PathSegment]:
        """New messages equal to the stored segments, in order."""
        segments = list(Path.FromString(self._data).path_segments)
        _put_back(segments, self._tokens)
        return segments

    def __len__(self) -> int:
        return len(self._tokens)
