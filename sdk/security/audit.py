"""Recording refusals: one log line and one counter increment per denied call.

Contract: :func:`denied` logs a warning ``authz denied`` with the kind of check, the identities
involved and the rule or reason, increments ``vwire_authz_denied_total{kind=...}``, and returns the
:class:`sdk.errors.PermissionDenied` for the caller to raise. Kinds in use: ``request`` (network
service requests), ``register`` (registry registrations), ``ownership`` (changing another
identity's registry record), ``token`` (path token chain refused).
"""

from __future__ import annotations

import structlog
from prometheus_client.metrics import Counter

from sdk.errors import FabricError, PermissionDenied

_log = structlog.get_logger("sdk.security.authz")

DENIED = Counter(
    "vwire_authz_denied",
    "Calls refused by authorization (policy, ownership, path tokens), by kind of check",
    ["kind"],
)


def denied(kind: str, reason: str, **identities: str | None) -> PermissionDenied:
    """Log and count a refusal; returns the error to raise."""
    record(kind, reason, **identities)
    return PermissionDenied(reason)


def record(kind: str, reason: str, **identities: str | None) -> None:
    """Log and count a refusal that is raised as another error (e.g. Unauthenticated)."""
    DENIED.labels(kind=kind).inc()
    _log.warning("authz denied", kind=kind, reason=reason, **identities)


def refused(kind: str, exc: FabricError, **identities: str | None) -> FabricError:
    """Log and count ``exc`` as a refusal of ``kind``; returns it for the caller to raise."""
    record(kind, str(exc), **identities)
    return exc
