"""Kept connections (sdk.networkservice.stored): what comes back is what was stored, token texts
byte for byte, the stored message is left as it was, and copies of a real path share their
tokens' headers (the signers' certificate chains) instead of holding them each."""

from __future__ import annotations

import gc

import pytest

from api.proto.connection_pb2 import DOWN, Connection, PathSegment
from sdk.networkservice import stored
from sdk.networkservice.stored import StoredConnection, StoredSegments
from sdk.security import token
from sdk.security.ca import CertificateAuthority

TD = "example.org"
HOPS = ["nsc/web", "nsmgr/n1", "forwarder/n1", "nsmgr/n1", "nsmgr/n2", "forwarder/n2", "nsmgr/n2"]


def _real_path() -> Connection:
    """A connection as an nsmgr holds it: seven segments, each with a signed token (the two
    passes through a node's nsmgr are signed by the same SVID)."""
    ca = CertificateAuthority.create(TD)
    svids = {hop: ca.issue(f"spiffe://{TD}/{hop}", ttl=3600) for hop in set(HOPS)}
    conn = Connection(id="c-1", network_service="db", network_service_endpoint_name="nse-a")
    conn.labels["app"] = "web"
    conn.context.ip_context.src_ip_addrs.append("10.70.0.2/32")
    previous = ""
    for i, hop in enumerate(HOPS):
        audience = f"spiffe://{TD}/{HOPS[(i + 1) % len(HOPS)]}"
        signed, _ = token.sign(svids[hop], audience, f"seg-{i}", previous)
        conn.path.path_segments.append(PathSegment(id=f"seg-{i}", name=hop, token=signed))
        previous = signed
    conn.path.index = 3
    return conn


def test_a_stored_connection_comes_back_equal_and_leaves_the_original_alone() -> None:
    conn = _real_path()
    before = conn.SerializeToString()
    kept = StoredConnection(conn, keep_path=True)
    assert conn.SerializeToString() == before
    again = kept.restore()
    assert again == conn and again.SerializeToString() == before
    assert [s.token for s in again.path.path_segments] == [s.token for s in conn.path.path_segments]
    assert (kept.id, kept.endpoint, kept.down) == ("c-1", "nse-a", False)
    assert kept.path_ids == tuple(f"seg-{i}" for i in range(7))
    assert kept.path_names == tuple(HOPS)
    conn.state = DOWN
    assert StoredConnection(conn).down


def test_copies_share_their_token_texts() -> None:
    conn = _real_path()
    serialized = len(conn.SerializeToString())
    first, second = StoredConnection(conn), StoredConnection(_reparsed(conn))
    # Without its tokens a copy is under a sixth of the bytes.
    assert first.size < serialized / 6
    for a, b in zip(first._tokens, second._tokens, strict=True):
        assert isinstance(a, tuple) and isinstance(b, tuple)
        assert a[0] is b[0] and a[1] is b[1]  # one text for both copies
    headers = {id(kept[0]) for kept in first._tokens if isinstance(kept, tuple)}
    assert len(headers) == len(set(HOPS))  # one header per signer


def test_shared_texts_go_with_the_last_copy() -> None:
    conn = _real_path()
    kept, other = StoredConnection(conn), StoredConnection(_real_path())  # another CA: no overlap
    # As bytes: a set of the texts themselves would hold them.
    texts = {part.encode() for t in kept._tokens if isinstance(t, tuple) for part in t}
    assert len(texts) == len(set(HOPS)) + len(HOPS)  # a header per signer, a rest per token
    stored._sweep()
    assert texts <= {text.encode() for text in stored._SHARED}  # held by a copy: kept
    del kept
    gc.collect()
    stored._sweep()
    assert not texts & {text.encode() for text in stored._SHARED}
    assert other.restore().path.path_segments[0].token


def test_the_table_is_swept_as_it_grows() -> None:
    stored._sweep()
    start = len(stored._SHARED)
    for i in range(3 * stored._SWEEP_MIN):
        conn = Connection(id=str(i))
        conn.path.path_segments.add(token=f"h{i}.r{i}")
        StoredConnection(conn)  # dropped at once
    assert len(stored._SHARED) < start + 2 * stored._SWEEP_MIN


def _reparsed(conn: Connection) -> Connection:
    return Connection.FromString(conn.SerializeToString())  # its own token strings


@pytest.mark.parametrize(
    "texts", [["", "no-dot", ".", "..", "a.b.c", "x."], ["ünïcode.ä", "", ""], []]
)
def test_any_token_text_comes_back_as_it_was(texts: list[str]) -> None:
    conn = Connection(id="odd")
    conn.path.path_segments.extend(PathSegment(id=str(i), token=t) for i, t in enumerate(texts))
    assert [s.token for s in StoredConnection(conn).restore().path.path_segments] == texts
    segments = StoredSegments(conn.path.path_segments)
    assert len(segments) == len(texts)
    assert [s.token for s in segments.restore()] == texts


def test_stored_segments_are_copies() -> None:
    conn = _real_path()
    tail = conn.path.path_segments[4:]
    kept = StoredSegments(tail)
    assert [s.token for s in conn.path.path_segments[4:]] == [s.token for s in tail]
    assert all(s.token for s in conn.path.path_segments)  # the caller's segments keep theirs
    assert kept.restore() == list(conn.path.path_segments[4:])
