"""Settings of the nsmgr process (environment prefix ``VWIRE_NSMGR_``)."""

from __future__ import annotations

from dataclasses import dataclass

from sdk.domains import DEFAULT_DOMAIN
from sdk.select.policy import POLICIES
from sdk.settings import setting

PREFIX = "VWIRE_NSMGR_"


@dataclass(frozen=True)
class NsmgrSettings:
    name: str = setting("", "this node manager's name (default: nsmgr-<hostname>)")
    listen: list[str] = setting(
        ["unix:///var/run/vwire/nsmgr.sock"],
        "addresses to serve on: a unix socket for local clients, endpoints and the forwarder, "
        "and tcp://host:port for remote nsmgrs",
    )
    advertise: str = setting(
        "", "URL remote nsmgrs reach this one at (tcp://ip:port); default: the first TCP "
        "listener; with neither, it serves its own node only"
    )
    registry: str = setting(
        "unix:///var/run/vwire/registry.sock",
        "the registry's address, or its replicas' addresses comma-separated (calls and watches "
        "move to another replica when one fails)",
    )
    domain: str = setting(
        DEFAULT_DOMAIN, "this node's domain: a service or endpoint named NAME@DOMAIN is local"
    )
    gateway: str = setting(
        "", "this domain's gateway (tcp://host:port): finds for NAME@OTHER-DOMAIN go there; "
        "without it only this domain's services are reachable"
    )
    insecure: bool = setting(False, "allow plain-text TCP between nodes (development only)")
    svid_dir: str = setting(
        "", "directory with svid.crt, svid.key and bundle.pem (nsmctl ca issue): mTLS between nodes"
    )
    policy: str = setting("", "authorization policy file (YAML); none: every client is allowed")
    token_lifetime: float = setting(
        60.0, "seconds a path segment stays valid; clients refresh well before"
    )
    request_timeout: float = setting(15.0, "deadline for a request that carries none, seconds")
    select_policy: str = setting(
        "round-robin", "endpoint selection: round-robin, least-connections or weighted",
        choices=POLICIES,
    )
    max_in_flight_per_peer: int = setting(
        256, "unary calls one peer may have open at once (all local callers share the unix "
        "socket's budget: raise it for nodes with many workloads); more get RESOURCE_EXHAUSTED"
    )
    metrics_listen: str = setting(
        "", "serve Prometheus metrics on host:port (/metrics); off when empty"
    )
    log_level: str = setting("info", "debug, info, warning or error")
    trace: bool = setting(False, "log every chain element's entry and exit (debug level)")
