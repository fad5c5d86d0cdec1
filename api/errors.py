"""The root of the fabric's exception tree, for the typed views of the API that raise it.

:class:`FabricError` carries the gRPC status code it maps to at a server's edge;
:class:`InvalidArgument` names the field that is wrong and how to fix it. The rest of the tree is
in :mod:`sdk.errors`, which re-exports these two: one tree, rooted where the API needs it.
"""

from __future__ import annotations

import grpc


def quoted(value: str, limit: int = 40) -> str:
    """``value`` quoted for an error message, cut to ``limit`` characters: a message names the
    problem, it does not echo kilobytes of (possibly hostile) input."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


class FabricError(Exception):
    """Base of all fabric errors; maps to UNKNOWN unless a subclass says otherwise."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN


class InvalidArgument(FabricError):
    """The caller sent something malformed; the message names the field and the rule."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
