"""The multi-cloud lab: several domains on this machine, joined by a simulated internet with NAT.

:class:`MultiLab` builds a :class:`lab.clouds.MultiCloud` topology: the network of
:mod:`lab.internet` (each domain its own bridge with its cloud's MTU and its router's nftables
NAT), and per domain what a real one has:

* its own trust domain ``<domain>.vwire`` (:class:`lab.domaintrust.DomainTrust`: a CA in
  ``<state>/ca-<domain>``, every CA federated with every other; a renewal agent
  ``ca-agent-<domain>``);
* its own registry (``registry-<domain>``) and gateway (``gateway-<domain>``, in the router's
  namespace on the domain's public address ``100.64.d.1:5105``: the one address the domain
  exposes; gateways find each other through ``<state>/domains.yaml``);
* on every node nsmgr (its node's address, pointed at the domain's registry and gateway) and
  forwarder, which knows its site (the domain), its NAT (``--nat``, ``--external-address`` for
  a 1:1 public IP) and the internet's MTU (``--wan-mtu``), so tunnels between domains get the
  right endpoint, keepalive and path MTU.

A client asks for a service of another domain as ``service@domain``: the request goes nsmgr →
gateway → the other domain's gateway → the endpoint's nsmgr, and the vWire runs node to node
across the NAT, encrypted.

:meth:`MultiLab.demo` starts an endpoint per service and a client per client of the topology,
waits (bounded) until every client's vWire answers a ping, and checks each one's MTU with
don't-fragment pings (:func:`lab.observe.check_path_mtu`). :meth:`MultiLab.down` removes
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
from lab import internet, network, ready
from lab.clouds import (
    ClientSpec,
    CloudNode,
    Domain,
    HostSpec,
    MultiCloud,
    Service,
    VmSpec,
    parse_text,
)
from lab.domaintrust import DomainTrust
from lab.fabric import RENEW_INTERVAL, SVID_TTL, Fabric, endpoint_cidrs
from lab.internet import Addresses, addresses, gateway_url, node_netns, router_netns
from lab.observe import check_path_mtu, endpoint_address, ping, registered, wait_for
from lab.topology import NodePlaces, Topology, netns_path
from sdk.errors import FabricError

STATE_FILE = "multi-cloud.json"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class LabNode(NodePlaces):
    """One node of the multi-cloud lab and where its processes live."""

    domain: Domain
    node: CloudNode
    netns: str
    where: Addresses
    dir: Path

    @property
    def name(self) -> str:
        return self.node.name

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
        return parse_text(record["document"], record["source"])
    except (OSError, ValueError, KeyError, TypeError, FabricError):
        return None


class MultiLab:
    """See the module docstring."""

    def __init__(self, topology: Topology, model: MultiCloud, *, log_level: str = "info",
                 ready_timeout: float = 60.0) -> None:
        self.topology = topology
        self.model = model
        self.log_level = log_level
        self.ready_timeout = ready_timeout
        self.fabric = Fabric(topology, 1, log_level=log_level)  # its processes and down()
        self.processes = self.fabric.processes
        self.trust = DomainTrust(topology.state_dir)
        self.nodes = [
            LabNode(domain, node, node_netns(topology, node), addresses(domain, node),
                    topology.state_dir / node.name)
            for domain, node in model.all_nodes()
        ]
        self.clients: dict[str, LabClient] = {}

    def registry_url(self, domain: str) -> str:
        return f"unix://{self.topology.state_dir / f'registry-{domain}.sock'}"

    def gateway_socket(self, domain: str) -> Path:
        return self.topology.state_dir / f"gateway-{domain}.sock"

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
        self.trust.init(d.name for d in self.model.domains)
        (state / "domains.yaml").write_text(yaml.safe_dump({"domains": {
            d.name: {"gateway": gateway_url(d),
                     "trust_domain": self.trust.trust_domain(d.name)}
            for d in self.model.domains}}))
        for domain in self.model.domains:
            names = ", ".join(f"{n.name} ({n.nat})" for n in domain.nodes)
            progress(f"domain {domain.name} ({domain.cloud}, MTU {domain.mtu}, trust domain "
                     f"{self.trust.trust_domain(domain.name)}): starting its registry and "
                     f"gateway ({gateway_url(domain)}), nsmgr and forwarder on {names}")
            self._start_domain(domain)
            for node in self.nodes:
                if node.domain == domain:
                    self._start_node(node)
        for domain in self.model.domains:
            await self._wait_socket(f"gateway-{domain.name}", self.gateway_socket(domain.name))
        for node in self.nodes:
            await self._wait_node(node)

    def _start_domain(self, domain: Domain) -> None:
        name, state = domain.name, self.topology.state_dir
        self.processes.start(f"ca-agent-{name}", [
            "nsmctl", "ca", "agent", "--dir", str(self.trust.ca_dir(name)),
            "--svids", str(self.trust.identities_dir(name)), "--ttl", f"{SVID_TTL:g}s",
            "--interval", f"{RENEW_INTERVAL:g}s",
        ])
        self.processes.start(f"registry-{name}", [
            "registry", "--listen", self.registry_url(name), "--store", "memory://",
            # the gateway's unix socket: a registry has no SVID of its own for the mTLS port
            "--domain", name, "--gateway", f"unix://{self.gateway_socket(name)}",
            "--log-level", self.log_level,
        ])
        self.processes.start(f"gateway-{name}", [
            "gateway", "--domain", name, "--name", f"gateway-{name}",
            "--listen", gateway_url(domain), "--listen", f"unix://{self.gateway_socket(name)}",
            "--advertise", gateway_url(domain), "--registry", self.registry_url(name),
            "--domains-file", str(state / "domains.yaml"), "--dns-server", "off",
            "--svid-dir", str(self.trust.identity(name, "gateway", f"gateway-{name}")),
            "--log-level", self.log_level,
        ], netns=router_netns(self.topology, domain))

    def _start_node(self, node: LabNode) -> None:
        node.dir.mkdir(parents=True, exist_ok=True)
        domain = node.domain.name
        self.processes.start(node.nsmgr_process, [
            "nsmgr", "--name", f"nsmgr-{node.name}",
            "--listen", f"unix://{node.nsmgr_socket}",
            "--listen", f"tcp://{node.where.private}:{internet.NSMGR_PORT}",
            "--svid-dir", str(self.trust.identity(domain, "nsmgr", f"nsmgr-{node.name}")),
            "--registry", self.registry_url(domain), "--domain", domain,
            "--gateway", gateway_url(node.domain), "--log-level", self.log_level,
        ], netns=node.netns)
        external = ["--external-address", node.where.public] if node.where.public else []
        self.processes.start(node.forwarder_process, [
            "forwarder", "--name", f"forwarder-{node.name}",
            "--listen", f"unix://{node.forwarder_socket}",
            "--nsmgr", f"unix://{node.nsmgr_socket}", "--underlay-interface", "ul0",
            "--site", node.domain.name, "--nat", node.node.nat, *external,
            "--wan-mtu", str(self.model.wan_mtu), "--log-level", self.log_level,
            "--svid-dir", str(self.trust.identity(domain, "forwarder",
                                                  f"forwarder-{node.name}")),
        ], netns=node.netns)

    async def _wait_socket(self, process: str, path: Path) -> None:
        await ready.listening(self.processes, process, path, self.ready_timeout)

    async def _wait_node(self, node: LabNode) -> None:
        await ready.node_ready(self.processes, node, self.ready_timeout)

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
                "--svid-dir", str(self.trust.identity(node.domain.name, "nse", name)),
                *[arg for cidr in endpoint_cidrs(index) for arg in ("--cidr", cidr)]]
        self.processes.start(name, args, netns=netns)
        await self._wait_socket(name, sock)

        async def known() -> bool:
            return await registered(self.registry_url(node.domain.name),
                                    NetworkServiceEndpoint(name=name))

        await wait_for(f"endpoint {name} registered", known, self.ready_timeout)
        return netns

    async def add_client(self, spec: ClientSpec, *, wait: bool = True) -> LabClient:
        """Start client ``spec`` on its node, asking for each of its services; with ``wait``
        wait until it reports one connection per service."""
        client = self.client(spec.name, spec)
        node = self.node(spec.node)
        network.add_netns(client.netns)
        netns = client.netns
        domain = node.domain.name
        nsmgr_id = self.trust.spiffe_id(domain, "nsmgr", f"nsmgr-{node.name}")
        self.processes.start(client.process, [
            "nsc", *client.urls, "--name", client.name, "--nsmgr", f"unix://{node.nsmgr_socket}",
            "--netns", netns_path(netns), "--state-file", str(client.state_file),
            "--log-level", self.log_level,
            "--svid-dir", str(self.trust.identity(domain, "nsc", client.name)),
            "--nsmgr-id", nsmgr_id,
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
        """Every service's endpoint, every client, and through each client's vWires a ping, then
        the path MTU check: a don't-fragment ping of exactly the vWire's MTU passes and one of a
        byte more does not (:class:`FabricError` otherwise)."""
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
                mtu = int(conn.get("context", {}).get("MTU", 0))
                if mtu:
                    await check_path_mtu(client.netns, target, mtu)
                    progress(f"  a don't-fragment ping of {mtu} bytes passes, {mtu + 1} does not")

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
                         tuple(f"kernel://{self.service_name(s, node.domain)}/nsm{i}"
                               for i, s in enumerate(spec.services)),
                         self.topology.state_dir / f"{process}.json")

    def vm_root(self, vm: VmSpec) -> Path:
        """Where the VM's ``nsmctl node join`` installs (its ``--root``)."""
        return self.topology.state_dir / f"vm-{vm.name}"

    def vm_client(self, vm: VmSpec) -> LabClient:
        """The reference client in the VM's workload namespace, asking for its services."""
        process = f"nsc-{vm.name}"
        return LabClient(process, f"app-{vm.name}", vm.name,
                         f"{internet.vm_netns(self.topology, vm.name)}_app",
                         tuple(f"kernel://{s}/nsm{i}" for i, s in enumerate(vm.services)),
                         self.topology.state_dir / f"{process}.json")

    def host_file(self, host: HostSpec, suffix: str) -> Path:
        """The external host's private key (``key``) or wg-quick file (``conf``)."""
        return self.topology.state_dir / f"host-{host.name}.{suffix}"

    def service_name(self, service: str, asking: Domain) -> str:
        """How a client in domain ``asking`` names ``service``: ``service@domain`` when the
        service runs in another domain."""
        where, _ = self.model.node(next(s.node for s in self.model.services
                                        if s.name == service))
        return service if where == asking else f"{service}@{where.name}"

    def status(self) -> dict[str, Any]:
        """Domains with their nodes (addresses, NAT, process states) and each client's
        connections as it last reported them."""
        pid_of = self.processes.pid_of
        nodes = [{
            "name": n.name, "domain": n.domain.name, "cloud": n.domain.cloud,
            "mtu": n.domain.mtu, "nat": n.node.nat, "netns": n.netns,
            "underlay_ip": n.where.private, "public_ip": n.where.public,
            "nsmgr_socket": str(n.nsmgr_socket),
            "forwarder_socket": str(n.forwarder_socket),
            "nsmgr": pid_of(n.nsmgr_process) is not None,
            "forwarder": pid_of(n.forwarder_process) is not None,
        } for n in self.nodes]
        clients = [{"name": c.name, "node": c.node, "netns": self.client(c.name).netns,
                    "connections": self.client(c.name).connections()}
                   for c in self.model.clients]
        domains = [{
            "name": d.name, "cloud": d.cloud, "mtu": d.mtu,
            "trust_domain": self.trust.trust_domain(d.name), "gateway": gateway_url(d),
            "registry": self.registry_url(d.name), "ca_dir": str(self.trust.ca_dir(d.name)),
            "gateway_up": pid_of(f"gateway-{d.name}") is not None,
            "registry_up": pid_of(f"registry-{d.name}") is not None,
        } for d in self.model.domains]
        vms = [{
            "name": vm.name, "domain": vm.domain,
            "netns": internet.vm_netns(self.topology, vm.name),
            "address": internet.vm_address(self.model.domain(vm.domain), vm.index),
            "nsmgr": pid_of(f"{vm.name}-nsmgr") is not None,
            "forwarder": pid_of(f"{vm.name}-forwarder") is not None,
            "client_netns": self.vm_client(vm).netns,
            "connections": self.vm_client(vm).connections(),
        } for vm in self.model.vms]
        hosts = [{
            "name": h.name, "domain": h.domain, "service": h.service,
            "netns": internet.host_netns(self.topology, h.name),
            "address": internet.host_address(h.index),
            "config": str(self.host_file(h, "conf")),
            "configured": self.host_file(h, "conf").exists(),
        } for h in self.model.hosts]
        return {
            "up": all(n["nsmgr"] and n["forwarder"] for n in nodes)
            and all(d["gateway_up"] and d["registry_up"] for d in domains),
            "kind": "multi-cloud",
            "wan_mtu": self.model.wan_mtu,
            "domains": domains,
            "nodes": nodes,
            "clients": clients,
            "vms": vms,
            "external_hosts": hosts,
        }

    def down(self, grace: float = 5.0) -> list[str]:
        """Remove every process, namespace (and so nft table) and file of the lab."""
        return self.fabric.down(grace)
