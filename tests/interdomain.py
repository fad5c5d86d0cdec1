"""Two domains in one test: two sandboxes (``sdk.testing.Sandbox``), each with its own registry
and nodes, joined by a real gateway each (``gateway.app.Gateway`` in-process on unix sockets)
that find each other through a static domains file. Everything is stopped and removed on exit.
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
    """Domains ``a`` and ``b``: their sandboxes, gateways and the shared domains file."""

    root: Path
    boxes: dict[str, Sandbox]
    gateway_urls: dict[str, str]
    domains_file: Path
    gateways: dict[str, Gateway] = field(default_factory=dict)

    def settings(self, domain: str) -> GatewaySettings:
        return GatewaySettings(
            domain=domain, listen=[self.gateway_urls[domain]],
            registry=self.boxes[domain].registry_url, domains_file=str(self.domains_file),
            dns_server="off", request_timeout=5.0,
        )

    async def start_gateway(self, domain: str) -> Gateway:
        gateway = Gateway(self.settings(domain))
        await gateway.start()
        self.gateways[domain] = gateway
        return gateway

    async def stop_gateway(self, domain: str) -> None:
        await self.gateways.pop(domain).stop(0.1)


@contextlib.asynccontextmanager
async def two_domains(lifetime: float = 30.0) -> AsyncIterator[TwoDomains]:
    root = Path(tempfile.mkdtemp(prefix="vwid-", dir="/tmp"))  # short: unix socket paths
    urls = {d: f"unix://{root}/gateway-{d}.sock" for d in ("a", "b")}
    domains_file = root / "domains.yaml"
    domains_file.write_text(yaml.safe_dump({"domains": urls}))
    try:
        async with Sandbox(lifetime, domain="a", gateway=urls["a"]) as a, \
                Sandbox(lifetime, domain="b", gateway=urls["b"]) as b:
            both = TwoDomains(root, {"a": a, "b": b}, urls, domains_file)
            try:
                for domain in ("a", "b"):
                    await both.start_gateway(domain)
                yield both
            finally:
                for domain in list(both.gateways):
                    await both.stop_gateway(domain)
    finally:
        shutil.rmtree(root, ignore_errors=True)
