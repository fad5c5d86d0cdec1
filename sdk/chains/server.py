"""The prefix every NetworkService server chain starts with, and serving a chain over gRPC.

:class:`ServerChain` builds ``Trace → Measure → [DefaultDeadline] → [VerifyPath → RequireRelays] →
UpdatePath → Begin → Metadata → [ConnectionOwner] → Timeout → [Monitor] → <the hop's own
elements>``: a span and metrics of every call, a deadline for calls that bring none (when
``request_timeout`` is given), the signed path checked before anything else runs (with an SVID
source: every request must carry a valid signed path whose segments after the client's were signed
by relays, and a connection is refreshed and closed only by the client that made it), this hop's
path segment, one call at a time per connection, per-connection metadata, closing connections whose
caller stopped refreshing them, and the monitor stream (when given). It binds the timeout to the
whole chain's close.


:func:`add_chain_services` serves the chain as ``networkservice.NetworkService`` with gRPC health
(SERVING) and, when given, ``connection.MonitorConnection``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sdk.networkservice.begin import Begin
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement
from sdk.networkservice.deadline import DefaultDeadline
from sdk.networkservice.measure import Measure
from sdk.networkservice.metadata import Metadata
from sdk.networkservice.monitor import Monitor, add_monitor
from sdk.networkservice.owner import ConnectionOwner
from sdk.networkservice.relays import RequireRelays
from sdk.networkservice.server import add_network_service
from sdk.networkservice.timeout import Timeout
from sdk.networkservice.token import VerifyPath
from sdk.networkservice.trace import Trace
from sdk.networkservice.updatepath import UpdatePath
from sdk.security.source import SvidSource


@dataclass(frozen=True)
class ServerOptions:
    """What every server chain is configured with."""

    name: str  #: this hop's name in path segments
    hop: str = "server"  #: the kind of hop (nsmgr, forwarder, endpoint): a metric label
    svids: SvidSource | None = None  #: this process's SVIDs: path tokens are required then
    request_timeout: float | None = None  #: deadline of calls that bring none (None: keep none)
    monitor: Monitor | None = None  #: publish connection events (MonitorConnection)
    trace: bool = False  #: log every element's entry and exit at debug level


class ServerChain:
    """A server chain: the common prefix (see the module docstring) and ``elements``."""

    def __init__(
        self, options: ServerOptions, elements: Sequence[NetworkServiceElement]
    ) -> None:
        self.options = options
        self.timeout = Timeout()
        self.monitor = options.monitor
        self.chain = NetworkServiceChain(
            [*server_prefix(options, self.timeout), *elements], trace=options.trace
        )
        self.timeout.bind(self.chain.run_close)


def server_prefix(options: ServerOptions, timeout: Timeout) -> list[NetworkServiceElement]:
    """The elements a server chain starts with (see the module docstring)."""
    deadline = (
        [DefaultDeadline(options.request_timeout)] if options.request_timeout is not None else []
    )
    signed = options.svids is not None
    verify = [VerifyPath(options.svids), RequireRelays()] if options.svids is not None else []
    owner = [ConnectionOwner()] if signed else []
    monitor = [options.monitor] if options.monitor is not None else []
    return [
        Trace(options.hop), Measure(options.hop), *deadline, *verify, UpdatePath(options.name),
        Begin(), Metadata(), *owner, timeout, *monitor,
    ]


async def add_chain_services(
    server: grpc.aio.Server, chain: NetworkServiceChain, monitor: Monitor | None = None
) -> health.aio.HealthServicer:
    """Serve ``chain`` (and ``monitor``) on ``server``, with gRPC health reporting SERVING;
    returns the health servicer (for the process's own health services)."""
    add_network_service(server, chain)
    if monitor is not None:
        add_monitor(server, monitor)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return health_servicer
