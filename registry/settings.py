"""Settings of the registry process (environment prefix ``VWIRE_REGISTRY_``)."""

from __future__ import annotations

from dataclasses import dataclass

from sdk.domains import DEFAULT_DOMAIN
from sdk.settings import setting

PREFIX = "VWIRE_REGISTRY_"


@dataclass(frozen=True)
class RegistrySettings:
    listen: list[str] = setting(
        ["unix:///var/run/vwire/registry.sock"],
        "addresses to serve on, comma-separated: unix:///path.sock or tcp://host:port",
    )
    store: str = setting(
        "",
        "record store: sqlite:////abs/path.db (four slashes; three = relative), memory://, or "
        "etcd://host:port[,host:port...][/prefix] (several replicas over one etcd cluster) "
        "(default: registry.db in state_dir)",
    )
    state_dir: str = setting("/var/lib/vwire", "directory for the default SQLite store")
    etcd_tls_dir: str = setting(
        "", "directory with ca.crt, tls.crt, tls.key: the etcd store speaks TLS, checks etcd's "
        "certificate against ca.crt and authenticates with tls.crt (plain gRPC when empty)"
    )
    insecure: bool = setting(False, "allow plain-text TCP listeners (development only)")
    svid_dir: str = setting("", "directory with svid.crt, svid.key, bundle.pem: mTLS on TCP")
    policy: str = setting("", "authorization policy file (YAML): who may register what")
    default_ttl: float = setting(60.0, "seconds an endpoint registration lives unless refreshed")
    max_ttl: float = setting(3600.0, "longest expiration an endpoint may ask for, in seconds")
    max_records_per_identity: int = setting(
        10_000, "records of each kind (services, endpoints) one identity may hold; more get "
        "RESOURCE_EXHAUSTED (an nsmgr is one identity for all the endpoints of its node)"
    )
    max_bytes_per_identity: int = setting(
        64 * 1024 * 1024, "bytes of records of each kind one identity may hold; more get "
        "RESOURCE_EXHAUSTED"
    )
    watch_backlog_bytes: int = setting(
        32 * 1024 * 1024, "bytes of changes a watch stream may fall behind before it is closed "
        "with RESOURCE_EXHAUSTED (the client may Find again)"
    )
    domain: str = setting(
        DEFAULT_DOMAIN, "this registry's domain: a find for NAME@DOMAIN is a find for NAME"
    )
    gateway: str = setting(
        "", "this domain's gateway (tcp://host:port): finds for NAME@OTHER-DOMAIN go there "
        "(nsmctl get nse --domain D); without it they are refused"
    )
    grace: float = setting(2.0, "seconds open calls get to finish on shutdown")
    metrics_listen: str = setting(
        "", "serve Prometheus metrics on host:port (/metrics); off when empty"
    )
    log_level: str = setting("info", "debug, info, warning or error")
    trace: bool = setting(False, "log every chain element's entry and exit (debug level)")
