"""Path tokens out of what people and scripts see.

Contract: :func:`redact_tokens` takes connections in their JSON form (``MessageToDict`` output:
one dict, or any structure of dicts and lists holding them) and returns a copy in which every
path segment's ``token`` is replaced by ``sha256:`` and the first 16 characters of the token's
hash (:func:`sdk.security.token.token_hash`, the value the next segment's token chains to), so
two views of a connection can still be matched without showing a token. A ``token`` that already
starts with :data:`PREFIX` is a fingerprint (the nsmgr's monitor gives local callers those) and is
kept as it is, so redacting is idempotent and ``nsmctl status`` shows the same fingerprint as
``nsc``; a real token never starts with it (its parts are base64url, which has no ``:``).
Everything else is kept.
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
        if isinstance(token, str) and token and not token.startswith(PREFIX):
            segment["token"] = PREFIX + token_hash(token)[:16]
    return copied
