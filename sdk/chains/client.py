"""A client's NetworkService chain: connections that stay up until they are closed.

:class:`ClientChain` builds ``ClientBegin → Trace → Measure → [Heal] → [Refresh] →
[ExcludePrefixes] → UpdatePath → SetExpiry → [SignPathSegment] → Connect(nsmgr)``: one call at a
time per connection and the events later elements raise on it; healing lost connections (monitor
stream, optional data-plane probe) and refreshing them before their path segment expires (both with
``keep``); keeping the addresses of the workload's other connections out of this one's (with an
``exclude`` shared by the workload's clients); the client's own path segment with its expiry; with
an SVID source, the segment signed for the node's nsmgr (``nsmgr_id``, its SPIFFE ID, is required
then: the segment then expires with the token, at the latest with the SVID, which drives the
refresh); and the call to the nsmgr. The reference client (``nsc``), the in-process clients of the
lab and any future sidecar or gateway build on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdk.channels import ChannelPool
from sdk.errors import InvalidArgument
from sdk.networkservice.client import Connect
from sdk.networkservice.clientbegin import ChangeFn, ClientBegin
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement
from sdk.networkservice.excludedprefixes import ExcludePrefixes
from sdk.networkservice.expiry import SetExpiry
from sdk.networkservice.heal import Heal, Probe
from sdk.networkservice.measure import Measure
from sdk.networkservice.refresh import Refresh
from sdk.networkservice.token import SignPathSegment
from sdk.networkservice.trace import Trace
from sdk.networkservice.updatepath import UpdatePath
from sdk.security.source import SvidSource


@dataclass(frozen=True)
class ClientOptions:
    """How a client chain is built."""

    name: str  #: the client's name in its path segment
    nsmgr: str  #: URL of the node's nsmgr
    pool: ChannelPool  #: channels (the nsmgr's, and its monitor stream)
    lifetime: float = 60.0  #: seconds the client's path segment stays valid
    request_timeout: float = 15.0  #: deadline of every request and close
    svids: SvidSource | None = None  #: sign the client's segment with this SVID
    nsmgr_id: str = ""  #: the nsmgr's SPIFFE ID: the audience of the signature
    keep: bool = True  #: refresh and heal connections until they are closed
    probe: Probe | None = None  #: data-plane liveness check of the endpoint's address
    probe_interval: float = 0.2  #: seconds between probes
    probe_failures: int = 3  #: failed probes in a row that count as a loss
    trace: bool = False  #: log every element's entry and exit at debug level
    #: shared by every client of one workload, so its connections get distinct addresses
    exclude: ExcludePrefixes | None = None


class ClientChain:
    """See the module docstring."""

    def __init__(self, options: ClientOptions, on_change: ChangeFn | None = None) -> None:
        if options.svids is not None and not options.nsmgr_id:
            raise InvalidArgument(
                "nsmgr_id", "signing path tokens needs the SPIFFE ID of the node's nsmgr "
                "(e.g. spiffe://<trust-domain>/nsmgr/<node>)"
            )
        self.begin = ClientBegin(options.request_timeout, on_change)
        self.heal: Heal | None = None
        self.refresh: Refresh | None = None
        keep: list[NetworkServiceElement] = []
        if options.keep:
            self.heal = Heal(options.pool, options.nsmgr, options.probe, options.probe_interval,
                             options.probe_failures)
            self.refresh = Refresh(options.lifetime)
            keep = [self.heal, self.refresh]
        sign = (
            [SignPathSegment(options.svids, options.nsmgr_id, options.lifetime)]
            if options.svids is not None else []
        )
        self.chain = NetworkServiceChain(
            [
                self.begin, Trace("client"), Measure("client"), *keep,
                *([options.exclude] if options.exclude else []),
                UpdatePath(options.name), SetExpiry(options.lifetime), *sign,
                Connect(options.pool, options.nsmgr),
            ],
            trace=options.trace,
        )

    async def stop(self) -> None:
        """Stop refreshing and healing every connection (they are not closed)."""
        if self.refresh is not None:
            self.refresh.stop()
        if self.heal is not None:
            await self.heal.stop()
