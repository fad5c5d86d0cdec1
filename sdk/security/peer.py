"""Who is calling: the SPIFFE ID of a gRPC peer, as the TLS handshake proved it.

Contract: :func:`peer_spiffe_id` returns the SPIFFE ID from the verified client certificate of an
mTLS call (gRPC puts it in the auth context as ``peer_spiffe_id``), or None when the call came
over a transport without certificates (Unix sockets, insecure TCP). It never raises. Unix-socket
callers cannot be told apart here: gRPC Python exposes neither the socket nor its ``SO_PEERCRED``
(uid/pid) to servicers, so local callers prove who they are with path tokens instead.
:func:`identity_of` reads the same answer back from a :class:`sdk.chain.CallContext` peer string.
"""

from __future__ import annotations

from typing import Any

import grpc

SPIFFE_PREFIX = "spiffe://"


def peer_spiffe_id(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The caller's SPIFFE ID from its verified certificate, or None."""
    try:
        auth = context.auth_context()
    except Exception:  # a context without a call behind it
        return None
    for key in ("peer_spiffe_id", "peer_uri"):
        for value in auth.get(key, ()):
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if text.startswith(SPIFFE_PREFIX):
                return text
    return None


def identity_of(peer: str) -> str | None:
    """The SPIFFE ID in a CallContext peer string, or None for transport addresses."""
    return peer if peer.startswith(SPIFFE_PREFIX) else None
