"""Tokens never reach CLI output: redact_tokens keeps a fingerprint, everything else as it was."""

from __future__ import annotations

import copy

from google.protobuf import json_format

from api.proto.connection_pb2 import Connection, PathSegment
from sdk.security.redact import redact_tokens
from sdk.security.token import token_hash


def test_tokens_become_fingerprints_and_nothing_else_changes() -> None:
    conn = Connection(id="c", network_service="db")
    conn.path.path_segments.extend([PathSegment(name="nsc", id="1", token="aaa.bbb.ccc"),
                                    PathSegment(name="nse", id="2")])
    doc = json_format.MessageToDict(conn, preserving_proto_field_name=True)
    report = {"node": "n1", "connections": [doc, {"node": "n2", **doc}], "up": True}
    before = copy.deepcopy(report)

    shown = redact_tokens(report)

    assert report == before, "the input is left as it was"
    for conn_doc in shown["connections"]:
        segments = conn_doc["path"]["path_segments"]
        assert segments[0]["token"] == "sha256:" + token_hash("aaa.bbb.ccc")[:16]
        assert "token" not in segments[1]
        assert "aaa.bbb.ccc" not in repr(shown)
    assert shown["connections"][1]["node"] == "n2" and shown["up"] is True
    assert redact_tokens("text") == "text" and redact_tokens([1, None]) == [1, None]


def test_odd_shapes_are_left_alone() -> None:
    odd = {"path": {"path_segments": [None, "x", {"token": 5}, {"token": ""}]}, "path2": []}
    assert redact_tokens(odd) == odd
    assert redact_tokens({"path": "not a dict"}) == {"path": "not a dict"}


def test_fingerprints_are_not_hashed_again() -> None:
    token = "aaa.bbb.ccc"
    fingerprint = "sha256:" + token_hash(token)[:16]
    conn = Connection(id="c", network_service="db")
    conn.path.path_segments.extend([PathSegment(name="nsc", id="1", token=fingerprint),
                                    PathSegment(name="nsmgr", id="2", token=token)])
    doc = json_format.MessageToDict(conn, preserving_proto_field_name=True)

    shown = redact_tokens(doc)

    segments = shown["path"]["path_segments"]
    assert segments[0]["token"] == fingerprint, "a monitor's fingerprint is shown as it came"
    assert segments[1]["token"] == fingerprint, "and matches the token's own fingerprint"
    assert redact_tokens(shown) == shown, "redacting twice changes nothing"
