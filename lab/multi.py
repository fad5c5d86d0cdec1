"""The multi-cloud lab: several domains on this machine, joined by a simulated internet with NAT.

:class:`MultiLab` builds a :class:`lab.clouds.MultiCloud` topology: the network of
:mod:`lab.internet` (each domain its own bridge with its cloud's MTU and its router's nftables
NAT), a CA, and on every node nsmgr and forwarder. Each forwarder knows its site (the domain),
its NAT (``--nat``, ``--external-address`` for a 1:1 public IP) and the internet's MTU
(``--wan-mtu``), so tunnels between domains get the right endpoint, keepalive and path MTU. Each
nsmgr listens on its node's address and advertises the URL other domains reach it at (its public
address, or its domain's NAT address and forwarded control port).

Until the per-domain gateway exists, the domains share one registry and one trust domain (the
lab's CA): a request for a service names it without ``@domain`` and the shared registry finds it
in whichever domain it runs. The data plane is what a multi-cloud deployment has: tunnels
between nodes across NAT, with per-path MTU.

:meth:`MultiLab.demo` starts an endpoint per service and a client per client of the topology,
and waits (bounded) until every client's vWire answers a ping. :meth:`MultiLab.down` removes
everything (processes, wireguard-go, namespaces with their nft tables, the state directory).
The topology is kept in ``<state>/multi-cloud.json`` so ``status`` and ``down`` find it again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from api.proto.registry_pb2 import NetworkServiceEndpoint
from lab import internet, network
from lab.clouds import ClientSpec, CloudNode, Domain, MultiCloud, Service, parse
from lab.fabric import (
    CA_AGENT,
    FORWARDER_SERVICE,
    RENEW_INTERVAL,
    SVID_TTL,
    TRUST_DOMAIN,
    Fabric,
    endpoint_cidrs,
)
from lab.internet import Addresses, addresses, node_netns
from lab.observe import endpoint_address, ping, registered, wait_for
from lab.topology import Topology, netns_path
from sdk.errors import FabricError
from sdk.grpcutil import unix_socket_accepts
from sdk.security.ca import CertificateAuthority

STATE_FILE = "multi-cloud.json"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class LabNode:
    """One node of the multi-cloud lab and where its processes live."""

    domain: Domain
    node: CloudNode
    netns: str
    where: Addresses
    dir: Path

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def nsmgr_socket(self) -> Path:
        return self.dir / "nsmgr.sock"

    @property
    def forwarder_socket(self) -> Path:
        return self.dir / "forwarder.sock"

    @property
    def nsmgr_process(self) -> str:
        return f"{self.name}-nsmgr"

    @property
    def forwarder_process(self) -> str:
        return f"{self.name}-forwarder"

    def workload_netns(self, role: str) -> str:
        return f"{self.netns}_{role}"


@dataclass(frozen=True)
class LabClient:
    """A reference client (``python -m nsc``) of the lab and the state file it reports to."""

    process: str
    name: str
    node: str
    netns: str
    urls: tuple[str, ...]
    state_file: Path

    def connections(self) -> list[dict[str, Any]]:
        """The client's connections as it last reported them (JSON dicts), or []."""
        try:
            found: list[dict[str, Any]] = json.loads(self.state_file.read_text())["connections"]
        except (OSError, ValueError, KeyError, TypeError):
            return []
        return found


def saved(topology: Topology) -> MultiCloud | None:
    """The topology of the multi-cloud lab recorded in ``topology``'s state, or None."""
    try:
        record = json.loads((topology.state_dir / STATE_FILE).read_text())
        return parse(yaml.safe_load(record["document"]), record["source"])
    except (OSError, ValueError, KeyError, TypeError, FabricError, yaml.YAMLError):
        return None


class MultiLab:
    """See the module docstring."""

    def __init__(self, topology: Topology, model: MultiCloud, *, log_level: str = "info",
                 ready_timeout: float = 60.0) -> None:
        self.topology = topology
        self.model = model
        self.log_level = log_level
        self.ready_timeout = ready_timeout
        self.fabric = Fabric(topology, 1, log_level=log_level)  # identities, processes, down
        self.processes = self.fabric.processes
        self.nodes = [
            LabNode(domain, node, node_netns(topology, node), addresses(domain, node),
                    topology.state_dir / node.name)
            for domain, node in model.all_nodes()
        ]
        self.clients: dict[str, LabClient] = {}

    @property
    def registry_url(self) -> str:
        return f"unix://{self.topology.registry_socket}"

    def node(self, name: str) -> LabNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise FabricError(f"{name!r} is not a node of the lab")

    # -- bring-up -------------------------------------------------------------------------------

    async def up(self, document: str, source: str, progress: Progress = lambda _m: None) -> None:
        """Network, CA, the shared registry, nsmgr + forwarder on every node (ready); records
        ``document`` (the topology's YAML) for :func:`saved`."""
        self.down()
        state = self.topology.state_dir
        state.mkdir(parents=True, exist_ok=True)
        (state / STATE_FILE).write_text(json.dumps({"source": source, "document": document}))
        progress(f"creating the internet, {len(self.model.domains)} domain routers with NAT and "
                 f"{len(self.nodes)} node namespaces")
        internet.build(self.topology, self.model)
        CertificateAuthority.init(state / "ca", TRUST_DOMAIN)
        self.processes.start("registry", [
            "registry", "--listen", self.registry_url, "--store", "memory://",
            "--log-level", self.log_level,
        ])
        await self._wait_socket("registry", self.topology.registry_socket)
        self.processes.start(CA_AGENT, [
            "nsmctl", "ca", "agent", "--dir", str(state / "ca"),
            "--svids", str(self.fabric.identities_dir), "--ttl", f"{SVID_TTL:g}s",
            "--interval", f"{RENEW_INTERVAL:g}s",
        ])
        for domain in self.model.domains:
            names = ", ".join(f"{n.name} ({n.nat})" for n in domain.nodes)
            progress(f"domain {domain.name} ({domain.cloud}, MTU {domain.mtu}): starting nsmgr "
                     f"and forwarder on {names}")
            for node in self.nodes:
                if node.domain == domain:
                    self._start_node(node)
        for node in self.nodes:
            await self._wait_node(node)

    def _start_node(self, node: LabNode) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        self.processes.start(node.nsmgr_process, [
            "nsmgr", "--name", f"nsmgr-{node.name}",
            "--listen", f"unix://{node.nsmgr_socket}",
            "--listen", f"tcp://{node.where.private}:{internet.NSMGR_PORT}",
            "--advertise", node.where.nsmgr_url,
            "--svid-dir", str(self.fabric.identity("nsmgr", f"nsmgr-{node.name}")),
            "--registry", self.registry_url, "--log-level", self.log_level,
        ], netns=node.netns)
        external = ["--external-address", node.where.public] if node.where.public else []
        self.processes.start(node.forwarder_process, [
            "forwarder", "--name", f"forwarder-{node.name}",
            "--listen", f"unix://{node.forwarder_socket}",
            "--nsmgr", f"unix://{node.nsmgr_socket}", "--underlay-interface", "ul0",
            "--site", node.domain.name, "--nat", node.node.nat, *external,
            "--wan-mtu", str(self.model.wan_mtu), "--log-level", self.log_level,
            "--svid-dir", str(self.fabric.identity("forwarder", f"forwarder-{node.name}")),
        ], netns=node.netns)

    async def _wait_socket(self, process: str, path: Path) -> None:
        async def ready() -> bool:
            if self.processes.pid_of(process) is None:
                raise FabricError(f"{process} exited: see {self.processes.log(process)}")
            return unix_socket_accepts(path)

        await wait_for(f"{process} listening on {path}", ready, self.ready_timeout)

    async def _wait_node(self, node: LabNode) -> None:
        await self._wait_socket(node.nsmgr_process, node.nsmgr_socket)
        await self._wait_socket(node.forwarder_process, node.forwarder_socket)

        async def forwarder_registered() -> bool:
            return await registered(f"unix://{node.nsmgr_socket}", NetworkServiceEndpoint(
                name=f"forwarder-{node.name}", network_service_names=[FORWARDER_SERVICE]))

        await wait_for(f"forwarder-{node.name} registered with its nsmgr",
                       forwarder_registered, self.ready_timeout)

    # -- workloads ------------------------------------------------------------------------------

    async def add_endpoint(self, service: Service, index: int = 0) -> str:
        """Start the endpoint of ``service`` on its node (``index``: its address pool) and wait
        until the registry has it; returns its namespace."""
        node = self.node(service.node)
        name = f"nse-{service.name}"
        netns = node.workload_netns(service.name)
        network.add_netns(netns)
        sock = node.dir / f"{name}.sock"
        args = ["nse", "--name", name, "--listen", f"unix://{sock}",
                "--nsmgr", f"unix://{node.nsmgr_socket}", "--netns", netns_path(netns),
                "--service", service.name, "--log-level", self.log_level,
                "--svid-dir", str(self.fabric.identity("nse", name)),
                *[arg for cidr in endpoint_cidrs(index) for arg in ("--cidr", cidr)]]
        self.processes.start(name, args, netns=netns)
        await self._wait_socket(name, sock)

        async def known() -> bool:
            return await registered(self.registry_url, NetworkServiceEndpoint(name=name))

        await wait_for(f"endpoint {name} registered", known, self.ready_timeout)
        return netns

    async def add_client(self, spec: ClientSpec, *, wait: bool = True) -> LabClient:
        """Start client ``spec`` on its node, asking for each of its services; with ``wait``
        wait until it reports one connection per service."""
        client = self.client(spec.name, spec)
        node = self.node(spec.node)
        network.add_netns(client.netns)
        netns = client.netns
        nsmgr_id = Fabric.spiffe_id("nsmgr", f"nsmgr-{node.name}")
        self.processes.start(client.process, [
            "nsc", *client.urls, "--name", client.name, "--nsmgr", f"unix://{node.nsmgr_socket}",
            "--netns", netns_path(netns), "--state-file", str(client.state_file),
            "--log-level", self.log_level,
            "--svid-dir", str(self.fabric.identity("nsc", client.name)), "--nsmgr-id", nsmgr_id,
        ], netns=netns)
        self.clients[spec.name] = client
        if wait:
            await self.wait_client(spec.name)
        return client

    async def wait_client(self, name: str, seconds: float | None = None) -> None:
        client = self.clients[name]

        async def connected() -> bool:
            if self.processes.pid_of(client.process) is None:
                raise FabricError(f"client {client.process} exited: see "
                                  f"{self.processes.log(client.process)}")
            return len(client.connections()) == len(client.urls)

        await wait_for(f"client {client.process} connected", connected,
                       seconds or self.ready_timeout)

    async def demo(self, progress: Progress = lambda _m: None) -> None:
        """Every service's endpoint, every client, and a ping through each client's vWires."""
        for index, service in enumerate(self.model.services):
            domain, _ = self.model.node(service.node)
            progress(f"starting endpoint for {service.name} on {service.node} ({domain.name})")
            await self.add_endpoint(service, index)
        for spec in self.model.clients:
            domain, _ = self.model.node(spec.node)
            progress(f"connecting client {spec.name} on {spec.node} ({domain.name}) to "
                     f"{', '.join(spec.services)}")
            await self.add_client(spec)
        for name, client in self.clients.items():
            for conn in client.connections():
                target = endpoint_address(conn)
                progress(f"pinging {conn.get('network_service')} at {target} from {name} "
                         f"(MTU {conn.get('context', {}).get('MTU', '?')})")

                async def passes(netns: str = client.netns, address: str = target) -> bool:
                    return await ping(netns, address)

                await wait_for(f"{name}'s vWire to {conn.get('network_service')}", passes, 20)

    # -- inspection and teardown ----------------------------------------------------------------

    def client(self, name: str, spec: ClientSpec | None = None) -> LabClient:
        """Client ``name`` of the topology (or ``spec``): its process, namespace and state file
        (works from another process too)."""
        if name in self.clients:
            return self.clients[name]
        spec = spec or next(c for c in self.model.clients if c.name == name)
        node = self.node(spec.node)
        process = f"nsc-{name}"
        return LabClient(process, f"{name}-{node.name}", node.name, node.workload_netns(name),
                         tuple(f"kernel://{s}/nsm{i}" for i, s in enumerate(spec.services)),
                         self.topology.state_dir / f"{process}.json")

    def status(self) -> dict[str, Any]:
        """Domains with their nodes (addresses, NAT, process states) and each client's
        connections as it last reported them."""
        pid_of = self.processes.pid_of
        nodes = [{
            "name": n.name, "domain": n.domain.name, "cloud": n.domain.cloud,
            "mtu": n.domain.mtu, "nat": n.node.nat, "netns": n.netns,
            "underlay_ip": n.where.private, "public_ip": n.where.public,
            "nsmgr_url": n.where.nsmgr_url, "nsmgr_socket": str(n.nsmgr_socket),
            "forwarder_socket": str(n.forwarder_socket),
            "nsmgr": pid_of(n.nsmgr_process) is not None,
            "forwarder": pid_of(n.forwarder_process) is not None,
        } for n in self.nodes]
        clients = [{"name": c.name, "node": c.node, "netns": self.client(c.name).netns,
                    "connections": self.client(c.name).connections()}
                   for c in self.model.clients]
        running = ["registry", *[p for n in self.nodes
                                 for p in (n.nsmgr_process, n.forwarder_process)]]
        return {
            "up": all(pid_of(p) is not None for p in running),
            "kind": "multi-cloud",
            "registry_socket": str(self.topology.registry_socket),
            "ca_dir": str(self.topology.state_dir / "ca"),
            "wan_mtu": self.model.wan_mtu,
            "nodes": nodes,
            "clients": clients,
        }

    def down(self, grace: float = 5.0) -> list[str]:
        """Remove every process, namespace (and so nft table) and file of the lab."""
        return self.fabric.down(grace)
