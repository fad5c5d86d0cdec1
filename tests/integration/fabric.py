"""An in-process fabric for negotiation tests: real gRPC servers, fake kernels.

Each :class:`FakeNode` runs a real :class:`nsmgr.app.Nsmgr` (unix socket + TCP on 127.0.0.1) and
a real :class:`forwarder.app.Forwarder` whose kernel is a :class:`FakeKernel` and whose WireGuard
is a :class:`FakeWireGuard`; endpoints are real :class:`nse.app.Endpoint` servers and clients real
:class:`nsc.client.VWireClient` objects. Only the kernel is simulated, so the whole negotiation —
routing, selection, mechanisms, IPAM, refresh, heal, close — runs for real, fast and unprivileged.
With ``identities=True`` every process gets an SVID of a test CA (``spiffe://test.vwire/<kind>/
<name>``): nodes talk mTLS and every request carries a signed path.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forwarder.app import Forwarder
from forwarder.kernel import FakeKernel
from forwarder.settings import ForwarderSettings
from forwarder.wireguard.fake import FakeWireGuard
from nsc.client import VWireClient
from nse.app import Endpoint
from nse.settings import NseSettings
from nsmgr.app import Nsmgr
from nsmgr.settings import NsmgrSettings
from registry.app import Registry
from registry.store import open_store
from sdk.channels import ChannelPool
from sdk.errors import FabricError
from sdk.grpcutil import parse_address
from sdk.security.ca import CertificateAuthority
from sdk.security.federation import write_svid_set
from sdk.security.source import FileSvidSource
from sdk.security.tls import server_name

TRUST_DOMAIN = "test.vwire"


class Identities:
    """A test CA writing SVID directories under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = CertificateAuthority.create(TRUST_DOMAIN)

    @staticmethod
    def spiffe_id(kind: str, name: str) -> str:
        return f"spiffe://{TRUST_DOMAIN}/{kind}/{name}"

    def issue(self, kind: str, name: str) -> str:
        directory = self.root / "identities" / kind / name
        svid = self.ca.issue(self.spiffe_id(kind, name), [server_name(TRUST_DOMAIN)])
        write_svid_set(directory, svid, self.ca.trust)  # with the CA's federated bundles
        return str(directory)


@dataclass
class FakeNode:
    name: str
    dir: Path
    registry: str
    lifetime: float
    policy: str
    authorization: str = ""
    identities: Identities | None = None
    kernel: FakeKernel = field(default_factory=FakeKernel)
    nsmgr: Nsmgr | None = None
    forwarder: Forwarder | None = None

    @property
    def nsmgr_url(self) -> str:
        return f"unix://{self.dir}/nsmgr.sock"

    async def start(self, index: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.kernel.add_link(None, "ul0", "veth", up=True)
        await self.kernel.add_address(None, "ul0", f"10.250.0.{index}/24")
        self.nsmgr = Nsmgr(NsmgrSettings(
            name=f"nsmgr-{self.name}", listen=[self.nsmgr_url, "tcp://127.0.0.1:0"],
            registry=self.registry, insecure=True, token_lifetime=self.lifetime,
            select_policy=self.policy, policy=self.authorization,
            svid_dir=self._svid_dir("nsmgr", f"nsmgr-{self.name}"),
        ))
        await self.nsmgr.start()
        await self.start_forwarder()

    async def start_forwarder(self) -> None:
        self.forwarder = Forwarder(
            ForwarderSettings(
                name=f"forwarder-{self.name}", listen=f"unix://{self.dir}/forwarder.sock",
                nsmgr=self.nsmgr_url, underlay_interface="ul0", token_lifetime=self.lifetime,
                register_interval=0.2,
                svid_dir=self._svid_dir("forwarder", f"forwarder-{self.name}"),
            ),
            self.kernel,
            FakeWireGuard(self.kernel),
        )
        await self.forwarder.start()

    def _svid_dir(self, kind: str, name: str) -> str:
        return self.identities.issue(kind, name) if self.identities else ""

    def workload(self, name: str) -> str:
        """A fake namespace for a workload on this node; returns its path."""
        return self.kernel.add_netns(f"/var/run/netns/{self.name}-{name}")

    async def stop(self) -> None:
        if self.forwarder is not None:
            await self.forwarder.stop()
        if self.nsmgr is not None:
            await self.nsmgr.stop()


class Fabric:
    """A registry and nodes; endpoints and clients made through it are stopped by :meth:`stop`."""

    def __init__(
        self, root: Path, lifetime: float = 30.0, policy: str = "round-robin",
        authorization: str = "", identities: bool = False,
    ) -> None:
        self.root = root
        self.identities = Identities(root) if identities else None
        self.authorization = authorization
        self.lifetime = lifetime
        self.policy = policy
        self.registry = Registry(open_store("memory://"), default_ttl=30.0)
        self.registry_url = f"unix://{root}/registry.sock"
        self.nodes: list[FakeNode] = []
        self.endpoints: list[Endpoint] = []
        self.clients: list[VWireClient] = []
        self.pool = ChannelPool()

    async def start(self, nodes: int) -> None:
        await self.registry.start([parse_address(self.registry_url)])
        for i in range(1, nodes + 1):
            node = FakeNode(f"n{i}", self.root / f"n{i}", self.registry_url, self.lifetime,
                            self.policy, authorization=self.authorization,
                            identities=self.identities)
            self.nodes.append(node)
            await node.start(i)

    async def endpoint(self, node: FakeNode, name: str, service: str = "db",
                       labels: tuple[str, ...] = ()) -> Endpoint:
        endpoint = Endpoint(NseSettings(
            name=name, services=[service], labels=list(labels),
            listen=f"unix://{node.dir}/{name}.sock", nsmgr=node.nsmgr_url,
            netns=node.workload(name), cidr=["10.60.0.0/16", "fd00:60::/64"],
            register_interval=0.5,
            svid_dir=self.identities.issue("nse", name) if self.identities else "",
        ))
        await endpoint.start()
        self.endpoints.append(endpoint)
        return endpoint

    def client(self, node: FakeNode, name: str, service: str = "db",
               labels: dict[str, str] | None = None, keep: bool = False) -> VWireClient:
        """A client in a new workload namespace of ``node``; with ``keep`` it refreshes and
        heals its connection (no data-plane probe: the kernels are fake)."""
        client = VWireClient(
            name=name, nsmgr=node.nsmgr_url, pool=self.pool, netns_url=node.workload(name),
            network_service=service, interface="nsm0", labels=labels,
            lifetime=self.lifetime, request_timeout=5.0, keep=keep, probe=False,
            svids=FileSvidSource(Path(self.identities.issue("nsc", name)))
            if self.identities else None,
            nsmgr_id=Identities.spiffe_id("nsmgr", f"nsmgr-{node.name}"),
        )
        self.clients.append(client)
        return client

    async def stop(self) -> None:
        for client in self.clients:
            with contextlib.suppress(FabricError):  # a test may have broken the path on purpose
                await client.close()
        for endpoint in self.endpoints:
            await endpoint.stop()
        for node in self.nodes:
            await node.stop()
        await self.registry.stop(grace=0)
        await self.pool.close()


@contextlib.asynccontextmanager
async def temporary_fabric(prefix: str, **options: Any) -> AsyncIterator[Fabric]:
    """A :class:`Fabric` in a fresh directory under /tmp (``prefix``...), stopped and removed at
    the end; ``options`` go to its constructor."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix=prefix) as root:
        fab = Fabric(Path(root), **options)
        try:
            yield fab
        finally:
            await fab.stop()
