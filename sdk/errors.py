"""The one exception tree of the fabric.

Every error that crosses a component boundary is a :class:`FabricError`. Each class carries the
gRPC status code it maps to at the edge (see :mod:`sdk.grpcutil`), so a chain element raises the
error that describes the problem and the server turns it into the right status. Messages name the
field that is wrong and how to fix it, e.g. ``"name: must be at most 63 characters (got 80)"``.
The root of the tree and :class:`InvalidArgument` live in :mod:`api.errors`, since the typed
views of the API raise them too (``api`` imports nothing of ours); they are the same classes here.
"""

from __future__ import annotations

import grpc

from api.errors import FabricError, InvalidArgument, quoted

__all__ = [
    "AlreadyExists", "DataplaneError", "DeadlineExceeded", "FabricError", "FailedPrecondition",
    "InvalidArgument", "NotFound", "PermissionDenied", "ResourceExhausted", "Unauthenticated",
    "Unavailable", "quoted",
]


class NotFound(FabricError):
    """A named thing (service, endpoint, connection, interface, namespace) does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(FabricError):
    """Creating something whose name is taken."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(FabricError):
    """The caller is known but not allowed to do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(FabricError):
    """The caller could not be identified, or its credentials are invalid or expired."""

    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(FabricError):
    """A limit was reached (sizes, counts, in-flight requests)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(FabricError):
    """The system cannot do this in its present state (e.g. a kernel feature is missing)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(FabricError):
    """A peer or backend cannot be reached now; retrying later may work."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(FabricError):
    """The request's deadline passed before the work finished."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class DataplaneError(FabricError):
    """Programming the kernel (links, addresses, routes, WireGuard) failed, nothing left behind."""

    code = grpc.StatusCode.INTERNAL
