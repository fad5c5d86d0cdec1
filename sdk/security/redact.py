"""Path tokens out of what people and scripts see.

Contract: :func:`redact_tokens` takes connections in their JSON form (``MessageToDict`` output:
one dict, or any structure of dicts and lists holding them) and returns a copy in which every
path segment's ``token`` is replaced by ``sha256:`` and the first 16 characters of the token's
hash (:func:`sdk.security.token.token_hash`, the value the next segment's token chains to), so
two views of a connection can still be matched without showing a token. Everything else is kept.
Used for every CLI output and client report (``nsmctl``, ``nsc`` stdout and state file); the
tokens themselves travel only on the wire and in the processes' memory.
"""

from __future__ import annotations

from typing import Any

from sdk.security.token import token_hash

PREFIX = "sha256:"


def redact_tokens(doc: Any) -> Any:
    """See the module docstring."""
    if isinstance(doc, list):
        return [redact_tokens(item) for item in doc]
    if not isinstance(doc, dict):
        return doc
    copied = {key: redact_tokens(value) for key, value in doc.items()}
    path = copied.get("path")
    segments = path.get("path_segments") if isinstance(path, dict) else None
    for segment in segments if isinstance(segments, list) else []:
        token = segment.get("token") if isinstance(segment, dict) else None
        if isinstance(token, str) and token:
            segment["token"] = PREFIX + token_hash(token)[:16]
    return copied
