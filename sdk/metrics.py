"""The fabric's Prometheus metrics: one prefix (``vwire_``), base units, bounded labels.

Every metric the fabric exports is defined here (or, for the two that predate this module, in
:mod:`sdk.limits.inflight` and :mod:`sdk.security.audit`), so the list in docs/observability.md
has one source. Labels take values from small fixed sets (hop kinds, methods, gRPC status names,
record kinds, heal reasons) — never names of endpoints, clients or connections.

:func:`serve_metrics` exposes them over HTTP (``/metrics``) on ``host:port``; each process does
so when its ``metrics_listen`` setting is given (off by default).
"""

from __future__ import annotations

import asyncio

from prometheus_client.metrics import Counter, Gauge, Histogram

from sdk.errors import InvalidArgument

#: Seconds: from 5 ms (a local hop) to 30 s (a request's whole deadline).
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "vwire_networkservice_calls",
    "NetworkService calls handled, by hop kind, method (Request/Close) and gRPC status",
    ["hop", "method", "code"],
)
CALL_SECONDS = Histogram(
    "vwire_networkservice_call_duration_seconds",
    "Time a NetworkService call took from this hop on (at a client: the setup of a connection)",
    ["hop", "method"], buckets=_SECONDS,
)
REFRESHES = Counter(
    "vwire_client_refreshes", "Refreshes a client made, by result (ok, failed)", ["result"]
)
HEALS = Counter(
    "vwire_client_heals",
    "Heals a client started, by what noticed the loss (monitor, probe, refresh, asked)",
    ["reason"],
)
HEAL_SECONDS = Histogram(
    "vwire_client_heal_duration_seconds", "Time from a noticed loss to the healed connection",
    buckets=_SECONDS,
)
EJECTIONS = Counter(
    "vwire_endpoint_ejections", "Endpoints the circuit breaker took out of selection for a while"
)
REGISTRY_RECORDS = Gauge(
    "vwire_registry_records", "Records the registry holds, by kind", ["kind"]
)
REGISTRY_WATCHERS = Gauge(
    "vwire_registry_watchers", "Watching Find streams the registry serves, by kind", ["kind"]
)
WEBHOOK_REVIEWS = Counter(
    "vwire_webhook_reviews",
    "Admission reviews the webhook answered, by result (patched, allowed, denied, error)",
    ["result"],
)
REGISTRY_EXPIRED = Counter(
    "vwire_registry_expired", "Registrations removed because they were not refreshed", ["kind"]
)

HEAP_TRIMS = Counter(
    "vwire_process_heap_trims",
    "Times the process gave its C heap's free pages back to the system after its calls stopped",
)

ASYNCIO_TASKS = Gauge(
    "vwire_process_asyncio_tasks",
    "asyncio tasks alive in the process's event loop (steady under load; growth is a leak)",
)


WIREGUARD_DAEMONS = Gauge(
    "vwire_wireguard_daemons",
    "wireguard-go daemons a forwarder runs: serving a vWire, or kept after its vWire closed",
    ["state"],
)


def count_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Let ``vwire_process_asyncio_tasks`` count the tasks of ``loop`` when scraped (from the
    metrics thread: ``asyncio.all_tasks`` tolerates a loop changing its tasks meanwhile)."""
    ASYNCIO_TASKS.set_function(lambda: len(asyncio.all_tasks(loop)))


def serve_metrics(listen: str) -> tuple[str, int]:
    """Serve ``/metrics`` over HTTP on ``host:port`` (port 0: any free one), in a background
    thread; returns the bound (host, port). InvalidArgument names a malformed address."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise InvalidArgument(
            "metrics_listen", f"{listen!r} is not host:port (e.g. 127.0.0.1:9090)"
        )
    # The whole package only here: its __init__ brings the HTTP server (with http.server, email,
    # wsgiref) and registers the process, platform and gc collectors (see sdk.lean).
    from prometheus_client import start_http_server

    try:
        server, _ = start_http_server(int(port), addr=host)
    except OSError as exc:
        raise InvalidArgument("metrics_listen", f"cannot serve on {listen}: {exc}") from None
    bound_host, bound_port = server.server_address[:2]
    return str(bound_host), int(bound_port)
