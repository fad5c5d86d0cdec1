"""Two domains in one test.

In-process (:func:`two_domains`): two sandboxes (``sdk.testing.Sandbox``), each with its own
registry and nodes, joined by a real gateway each (``gateway.app.Gateway`` in-process on unix
sockets) that find each other through a static domains file. Everything is stopped and removed
on exit.

Real processes: :func:`lab.splitdomains.split_domains`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gateway.app import Gateway
from gateway.settings import GatewaySettings
from sdk.testing import Sandbox


@dataclass
class TwoDomains:
    """Domains ``a`` and ``b`` (or others): their sandboxes, gateways and the shared domains
    file; the domains in ``floating`` have floating gateways."""

    root: Path
    boxes: dict[str, Sandbox]
    gateway_urls: dict[str, str]
    domains_file: Path
    gateways: dict[str, Gateway] = field(default_factory=dict)
    floating: frozenset[str] = frozenset()

    def settings(self, domain: str) -> GatewaySettings:
        return GatewaySettings(
            domain=domain, listen=[self.gateway_urls[domain]],
            registry=self.boxes[domain].registry_url, domains_file=str(self.domains_file),
            dns_server="off", request_timeout=5.0, floating=domain in self.floating,
        )

    async def start_gateway(self, domain: str) -> Gateway:
        gateway = Gateway(self.settings(domain))
        await gateway.start()
        self.gateways[domain] = gateway
        return gateway

    async def stop_gateway(self, domain: str) -> None:
        await self.gateways.pop(domain).stop(0.1)


@contextlib.asynccontextmanager
async def two_domains(
    lifetime: float = 30.0, names: tuple[str, ...] = ("a", "b"),
    floating: frozenset[str] = frozenset(),
) -> AsyncIterator[TwoDomains]:
    """Domains ``names`` (default a and b), each a sandbox with its gateway."""
    root = Path(tempfile.mkdtemp(prefix="vwid-", dir="/tmp"))  # short: unix socket paths
    urls = {d: f"unix://{root}/gateway-{d}.sock" for d in names}
    domains_file = root / "domains.yaml"
    domains_file.write_text(yaml.safe_dump({"domains": urls}))
    try:
        async with contextlib.AsyncExitStack() as stack:
            boxes = {d: await stack.enter_async_context(
                Sandbox(lifetime, domain=d, gateway=urls[d])) for d in names}
            both = TwoDomains(root, boxes, urls, domains_file, floating=floating)
            try:
                for domain in names:
                    await both.start_gateway(domain)
                yield both
            finally:
                for domain in list(both.gateways):
                    await both.stop_gateway(domain)
    finally:
        shutil.rmtree(root, ignore_errors=True)
