"""Clients run inside the calling process: many short connections from one namespace.

:class:`InProcessClients` makes :class:`nsc.client.VWireClient` connections through one nsmgr
for one namespace, sharing a channel pool, and closes them all in :meth:`aclose` (use it as an
``async with``). Tests and benchmarks use it for many connections without a process each; they
are not refreshed or healed (``keep=False``): these connections live only as long as their
lifetime (``lifetime``, 60 s by default). With ``svid_dir`` and ``nsmgr_id`` they sign their
path segments (what an nsmgr with an SVID requires; see :meth:`lab.fabric.Fabric.identity`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from nsc.client import VWireClient
from sdk.channels import ChannelPool
from sdk.security.source import FileSvidSource


class InProcessClients:
    """See the module docstring."""

    def __init__(self, nsmgr_socket: Path, netns_path: str, name: str,
                 request_timeout: float = 15.0, svid_dir: Path | None = None,
                 nsmgr_id: str = "", lifetime: float = 60.0) -> None:
        self.nsmgr = f"unix://{nsmgr_socket}"
        self.lifetime = lifetime
        self.netns_path = netns_path
        self.name = name
        self.request_timeout = request_timeout
        self.pool = ChannelPool()
        self.svids = FileSvidSource(svid_dir) if svid_dir is not None else None
        self.nsmgr_id = nsmgr_id
        self.open: list[VWireClient] = []

    async def connect(self, service: str, interface: str,
                      labels: Mapping[str, str] | None = None) -> tuple[VWireClient, float]:
        """Request ``service`` with ``interface`` in the namespace; returns the connected client
        and the seconds the request took."""
        client = VWireClient(
            name=self.name, nsmgr=self.nsmgr, pool=self.pool, netns_url=self.netns_path,
            network_service=service, interface=interface, labels=labels,
            request_timeout=self.request_timeout, svids=self.svids, nsmgr_id=self.nsmgr_id,
            keep=False, lifetime=self.lifetime,
        )
        start = time.monotonic()
        await client.connect()
        elapsed = time.monotonic() - start
        self.open.append(client)
        return client, elapsed

    async def close(self, client: VWireClient) -> None:
        """Close one connection made here."""
        if client in self.open:
            self.open.remove(client)
        await client.close()

    async def aclose(self) -> None:
        """Close every connection still open (best effort: the first error is raised after all
        were tried) and the channels."""
        error: BaseException | None = None
        for client in list(self.open):
            try:
                await self.close(client)
            except Exception as exc:
                error = error or exc
        await self.pool.close()
        if error is not None:
            raise error

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.aclose()
