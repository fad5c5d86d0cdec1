"""An endpoint's NetworkService chain: the server prefix, then what every endpoint owes.

:class:`EndpointChain` builds the server prefix (:mod:`sdk.chains.server`, with a monitor) and
``ServesOnly(services) → Authorize(policy) → <the endpoint's own elements>``: an endpoint serves
only the network services it registered, and checks the client named by the first segment of the
verified path against its own authorization policy (allow-all without one), so a request that
reached it some other way than through a node manager is still held to both. The endpoint's own
elements (IPAM, the kernel side of the vWire, an application's elements) come last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from sdk.chains.server import ServerChain, ServerOptions
from sdk.networkservice.authorize import Authorize
from sdk.networkservice.core import NetworkServiceElement
from sdk.networkservice.monitor import Monitor
from sdk.networkservice.services import ServesOnly
from sdk.security.policy import PolicySource, load_policy


class EndpointChain(ServerChain):
    """See the module docstring."""

    def __init__(
        self,
        options: ServerOptions,
        services: Sequence[str],
        elements: Sequence[NetworkServiceElement],
        authorization: PolicySource | None = None,
    ) -> None:
        if options.monitor is None:
            options = replace(options, monitor=Monitor())
        super().__init__(options, [
            ServesOnly(services),
            Authorize(authorization if authorization is not None else load_policy(None)),
            *elements,
        ])
        assert options.monitor is not None
        self.monitor: Monitor = options.monitor
