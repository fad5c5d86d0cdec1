"""The fabric harness: N nodes with their own namespaces and processes, for the lab, tests, benches.

Use::

    fabric = Fabric(Topology("vwe-1234-", Path("/var/run/vwire-e2e/1234")), nodes=2)
    try:
        await fabric.up()                                  # underlay, registry, nsmgr+forwarder
        await fabric.add_endpoint("nse-a", ["db"], node=2, labels={"v": "1"})
        client = await fabric.add_client("nsc", node=1, urls=["kernel://db/nsm0"])
        conn = client.connections()[0]
        assert await ping(client.netns, endpoint_address(conn))
        fabric.kill("nse-a"); ...; await fabric.restart("n1-forwarder")
    finally:
        fabric.down()                                      # always: processes, wg-go, namespaces

Every wait is a poll with a deadline (:func:`lab.observe.wait_for`); nothing sleeps to
synchronise. :meth:`Fabric.down` is synchronous and idempotent, so it can run in any finalizer,
and removes the processes, stray ``wireguard-go`` (and their UAPI sockets), the topology's
namespaces and its state directory.

Identities: the fabric is its own trust domain (:data:`TRUST_DOMAIN`), with a CA kept in
``<state>/ca`` (so ``nsmctl ca issue --dir <state>/ca`` works against a running lab). Every
process gets an SVID ``spiffe://lab.vwire/<kind>/<name>`` (kinds ``nsmgr``, ``forwarder``,
``nse``, ``nsc``) in ``<state>/identities/<kind>/<name>``: nodes talk mTLS to each other and every
request carries a signed path. SVIDs live an hour; the process ``ca-agent`` (``nsmctl ca agent``)
re-issues each at half its lifetime, and :meth:`Fabric.rotate_identities` re-issues all of them at
once; the processes pick the new files up without a restart.

Registry: one ``registry`` process over ``memory://`` by default (``registry_store="sqlite"``:
over a SQLite file in the state directory, kept across its restarts); with ``"etcd"``
a three-member etcd cluster (lab processes ``etcd-m0..2``, :mod:`lab.etcd`) and two registry
replicas over it (``registry`` and ``registry-2``), every nsmgr given both addresses.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from lab import network, ready
from lab.clients import InProcessClients
from lab.etcd import EtcdCluster, start_in_lab
from lab.observe import monitor_connections, registered, signed_connections, wait_for
from lab.processes import Processes
from lab.topology import Node, Topology, netns_path
from sdk.chain import CallContext
from sdk.errors import FabricError, InvalidArgument
from sdk.grpcutil import channel
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import RegistryChain
from sdk.registry.kinds import SERVICE
from sdk.security.ca import CertificateAuthority
from sdk.security.svid import write_svid
from sdk.security.tls import server_name

DEFAULT_CIDRS = ("10.60.0.0/16", "fd00:60::/64")


def endpoint_cidrs(index: int) -> tuple[str, str]:
    """The address pools of the lab's ``index``-th endpoint (0: :data:`DEFAULT_CIDRS`): every
    endpoint hands out its own, so a client of several services sees distinct addresses."""
    return f"10.{60 + index}.0.0/16", f"fd00:{0x60 + index:x}::/64"
TRUST_DOMAIN = "lab.vwire"
REGISTRY_STORES = ("memory", "sqlite", "etcd")
SVID_TTL = 3600.0  # renewed at half-life by the fabric's ``nsmctl ca agent`` process
RENEW_INTERVAL = 60.0
CA_AGENT = "ca-agent"


@dataclass(frozen=True)
class Endpoint:
    """A reference endpoint (``python -m nse``) running in its own namespace on a node."""

    name: str
    node: Node
    services: tuple[str, ...]
    netns: str
    socket: Path


@dataclass(frozen=True)
class Client:
    """A reference client (``python -m nsc``) running in its own namespace on a node."""

    process: str
    name: str
    node: Node
    netns: str
    urls: tuple[str, ...]
    state_file: Path
    out_file: Path

    def connections(self) -> list[dict[str, Any]]:
        """The client's connections as it last reported them (JSON dicts), or []."""
        try:
            found: list[dict[str, Any]] = json.loads(self.state_file.read_text())["connections"]
        except (OSError, ValueError, KeyError):
            return []
        return found

    def heals(self, service: str | None = None) -> int:
        """How many times the client healed its connection to ``service`` (default: all)."""
        try:
            counts: dict[str, int] = json.loads(self.state_file.read_text()).get("heals", {})
        except (OSError, ValueError, AttributeError):
            return 0
        return sum(n for name, n in counts.items() if service is None or name == service)

    def connection(self, service: str | None = None) -> dict[str, Any]:
        """The connection to ``service`` (default: the only one); {} if there is none."""
        for conn in self.connections():
            if service is None or conn.get("network_service") == service:
                return conn
        return {}

    def events(self) -> list[dict[str, Any]]:
        """Every connection version the client printed on stdout, in order."""
        try:
            lines = self.out_file.read_text().splitlines()
        except OSError:
            return []
        return [json.loads(line) for line in lines if line.startswith("{")]


class Fabric:
    """See the module docstring."""

    def __init__(
        self,
        topology: Topology,
        nodes: int = 2,
        *,
        token_lifetime: float | None = None,
        select_policy: str | None = None,
        log_level: str = "info",
        ready_timeout: float = 30.0,
        registry_store: str = "memory",
        forwarder_args: Mapping[int, Sequence[str]] | None = None,
    ) -> None:
        if not 1 <= nodes <= 16:
            raise InvalidArgument("nodes", f"must be 1-16 (got {nodes})")
        if registry_store not in REGISTRY_STORES:
            raise InvalidArgument("registry_store", f"must be one of {', '.join(REGISTRY_STORES)}"
                                  f" (got {registry_store!r})")
        if unknown := sorted(set(forwarder_args or {}) - set(range(1, nodes + 1))):
            raise InvalidArgument("forwarder_args", f"keys are node indexes 1-{nodes} "
                                  f"(got {unknown})")
        self.registry_store = registry_store
        self.etcd: EtcdCluster | None = None  # once up with registry_store="etcd"
        self.topology = topology
        self.nodes = topology.nodes(nodes)
        self.processes = Processes(topology)
        self.token_lifetime = token_lifetime
        self.select_policy = select_policy
        self.log_level = log_level
        self.ready_timeout = ready_timeout
        #: extra flags of a node's forwarder, by node index (e.g. ``{1: ["--wireguard-device",
        #: "shared"]}``); kept in its command, so a restart keeps them too
        self.forwarder_args = {i: list(a) for i, a in (forwarder_args or {}).items()}
        self.endpoints: dict[str, Endpoint] = {}
        self.clients: dict[str, Client] = {}
        self.ca: CertificateAuthority | None = None
        self.identities: dict[Path, str] = {}  # SVID directory → SPIFFE ID

    @property
    def registry_url(self) -> str:
        return f"unix://{self.topology.registry_socket}"

    @property
    def registries(self) -> dict[str, Path]:
        """The registry processes and their sockets: one over memory://, or two replicas over a
        three-member etcd cluster (``registry_store="etcd"``)."""
        found = {"registry": self.topology.registry_socket}
        if self.registry_store == "etcd":
            found["registry-2"] = self.topology.state_dir / "registry-2.sock"
        return found

    @property
    def registry_urls(self) -> str:
        """What nsmgrs are given as ``--registry``: every registry replica's address."""
        return ",".join(f"unix://{path}" for path in self.registries.values())

    def node(self, index: int) -> Node:
        """Node ``index`` (1-based)."""
        if not 1 <= index <= len(self.nodes):
            raise InvalidArgument("node", f"{index} is not a node (1-{len(self.nodes)})")
        return self.nodes[index - 1]

    # -- bring-up -------------------------------------------------------------------------------

    async def up(self) -> None:
        """Namespaces and underlay, the registry, and nsmgr + forwarder on every node (ready)."""
        self.down()
        self.topology.state_dir.mkdir(parents=True, exist_ok=True)
        network.build(self.topology, self.nodes)
        self._issue_identities()
        store = "memory://"
        if self.registry_store == "sqlite":
            store = f"sqlite:///{self.topology.state_dir / 'registry.db'}"
        if self.registry_store == "etcd":
            self.etcd = await start_in_lab(
                self.topology.state_dir / "etcd", 3, self.processes.start, self.ready_timeout
            )
            store = self.etcd.url
        for name, path in self.registries.items():
            self.processes.start(name, [
                "registry", "--listen", f"unix://{path}", "--store", store,
                "--log-level", self.log_level,
            ])
        for name, path in self.registries.items():
            await self._wait_socket(name, path)
        self.processes.start(CA_AGENT, [
            "nsmctl", "ca", "agent", "--dir", str(self.topology.state_dir / "ca"),
            "--svids", str(self.identities_dir), "--ttl", f"{SVID_TTL:g}s",
            "--interval", f"{RENEW_INTERVAL:g}s",
        ])
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            self._start_nsmgr(node)
            self._start_forwarder(node)
        for node in self.nodes:
            await self._wait_node(node)

    def _issue_identities(self) -> None:
        """A throw-away trust domain for this fabric (see the module docstring)."""
        self.ca = CertificateAuthority.init(self.topology.state_dir / "ca", TRUST_DOMAIN)
        self.identities = {}
        self.identities_dir.mkdir(parents=True, exist_ok=True)

    @property
    def identities_dir(self) -> Path:
        return self.topology.state_dir / "identities"

    @staticmethod
    def spiffe_id(kind: str, name: str) -> str:
        """The SPIFFE ID the fabric gives process ``name`` of ``kind``."""
        return f"spiffe://{TRUST_DOMAIN}/{kind}/{name}"

    def svid_dir(self, kind: str, name: str) -> Path:
        """Where the SVID of process ``name`` of ``kind`` lives (issued by :meth:`identity`)."""
        return self.identities_dir / kind / name

    def identity(self, kind: str, name: str, ttl: float = SVID_TTL) -> Path:
        """Issue (or re-issue) the SVID of process ``name`` of ``kind``; returns its directory.
        Every SVID carries the fabric's server DNS name, so any process may serve mTLS."""
        if self.ca is None:
            self.ca = CertificateAuthority.load(self.topology.state_dir / "ca")
        directory = self.svid_dir(kind, name)
        spiffe_id = self.spiffe_id(kind, name)
        write_svid(directory, self.ca.issue(spiffe_id, [server_name(TRUST_DOMAIN)], ttl=ttl),
                   self.ca.bundle)
        self.identities[directory] = spiffe_id
        return directory

    def rotate_identities(self, ttl: float = SVID_TTL) -> int:
        """Re-issue every SVID this fabric issued, in place; returns how many."""
        for spiffe_id in list(self.identities.values()):
            kind, name = spiffe_id.removeprefix(f"spiffe://{TRUST_DOMAIN}/").split("/", 1)
            self.identity(kind, name, ttl)
        return len(self.identities)

    def _lifetime_args(self) -> list[str]:
        if self.token_lifetime is None:
            return []
        return ["--token-lifetime", str(self.token_lifetime)]

    def _start_nsmgr(self, node: Node) -> None:
        policy = ["--select-policy", self.select_policy] if self.select_policy else []
        self.processes.start(node.nsmgr_process, [
            "nsmgr", "--name", f"nsmgr-{node.name}",
            "--listen", f"unix://{node.nsmgr_socket}", "--listen", node.nsmgr_tcp,
            "--svid-dir", str(self.identity("nsmgr", f"nsmgr-{node.name}")),
            "--registry", self.registry_urls,
            "--log-level", self.log_level,
            *self._lifetime_args(), *policy,
        ], netns=node.netns)

    def _start_forwarder(self, node: Node) -> None:
        self.processes.start(node.forwarder_process, [
            "forwarder", "--name", f"forwarder-{node.name}",
            "--listen", f"unix://{node.forwarder_socket}", "--nsmgr", f"unix://{node.nsmgr_socket}",
            "--underlay-interface", "ul0", "--log-level", self.log_level, *self._lifetime_args(),
            "--svid-dir", str(self.identity("forwarder", f"forwarder-{node.name}")),
            *self.forwarder_args.get(node.index, []),
        ], netns=node.netns)

    async def _wait_socket(self, process: str, path: Path) -> None:
        await ready.listening(self.processes, process, path, self.ready_timeout)

    async def _wait_node(self, node: Node) -> None:
        await ready.node_ready(self.processes, node, self.ready_timeout)

    def add_workload_netns(self, node: int, role: str) -> str:
        """Create namespace ``<prefix><node>-<role>`` (removed by :meth:`down`); returns it."""
        name = self.node(node).workload_netns(role)
        network.add_netns(name)
        return name

    async def add_endpoint(
        self,
        name: str,
        services: Sequence[str],
        node: int,
        *,
        labels: Mapping[str, str] | None = None,
        cidrs: Sequence[str] = DEFAULT_CIDRS,
        netns_role: str | None = None,
    ) -> Endpoint:
        """Start a reference endpoint on ``node`` and wait until the registry has it."""
        where = self.node(node)
        netns = self.add_workload_netns(node, netns_role or name)
        endpoint = Endpoint(name, where, tuple(services), netns, where.dir / f"{name}.sock")
        args = ["nse", "--name", name, "--listen", f"unix://{endpoint.socket}",
                "--nsmgr", f"unix://{where.nsmgr_socket}", "--netns", netns_path(netns),
                "--log-level", self.log_level, "--svid-dir", str(self.identity("nse", name))]
        args += [arg for s in services for arg in ("--service", s)]
        args += [arg for k, v in (labels or {}).items() for arg in ("--label", f"{k}={v}")]
        args += [arg for c in cidrs for arg in ("--cidr", c)]
        self.processes.start(name, args, netns=netns)
        self.endpoints[name] = endpoint
        await self.wait_endpoint(name)
        return endpoint

    async def wait_endpoint(self, name: str) -> None:
        """Wait until endpoint ``name`` serves and is registered."""
        endpoint = self.endpoints[name]
        await self._wait_socket(name, endpoint.socket)

        async def known() -> bool:
            for process, path in self.registries.items():  # any replica that runs
                if self.processes.pid_of(process) is not None:
                    return await registered(f"unix://{path}", NetworkServiceEndpoint(name=name))
            return False

        await wait_for(f"endpoint {name} registered", known, self.ready_timeout)

    async def add_client(
        self,
        process: str,
        node: int,
        urls: Sequence[str],
        *,
        lifetime: float | None = None,
        wait: bool = True,
        extra: Sequence[str] = (),
    ) -> Client:
        """Start a reference client on ``node`` in namespace ``<node>-<process>``; with ``wait``
        wait until it reports one connection per URL."""
        where = self.node(node)
        netns = self.add_workload_netns(node, process)
        client = Client(process, f"{process}-{where.name}", where, netns, tuple(urls),
                        self.topology.state_dir / f"{process}.json",
                        self.processes.out(process))
        args = ["nsc", *urls, "--name", client.name, "--nsmgr", f"unix://{where.nsmgr_socket}",
                "--netns", netns_path(netns), "--state-file", str(client.state_file),
                "--log-level", self.log_level, *self.client_identity_args(node, client.name),
                *extra]
        if lifetime is not None:
            args += ["--lifetime", str(lifetime)]
        self.processes.start(process, args, netns=netns)
        self.clients[process] = client
        if wait:
            await self.wait_client(process)
        return client

    def nsmgr_id(self, node: int) -> str:
        """The SPIFFE ID of node ``node``'s nsmgr (the audience of its clients' tokens)."""
        return self.spiffe_id("nsmgr", f"nsmgr-{self.node(node).name}")

    def in_process_clients(self, node: int, netns: str, name: str) -> InProcessClients:
        """Clients made in this process (:class:`lab.clients.InProcessClients`) for namespace
        ``netns`` through node ``node``'s nsmgr, with an identity of their own."""
        return InProcessClients(self.node(node).nsmgr_socket, netns_path(netns), name,
                                svid_dir=self.identity("nsc", name), nsmgr_id=self.nsmgr_id(node))

    def client_identity_args(self, node: int, name: str) -> list[str]:
        """``python -m nsc`` flags giving client ``name`` on ``node`` its identity."""
        return ["--svid-dir", str(self.identity("nsc", name)), "--nsmgr-id", self.nsmgr_id(node)]

    async def wait_client(self, process: str) -> None:
        """Wait until a client reports one connection per URL."""
        client = self.clients[process]

        async def connected() -> bool:
            if self.processes.pid_of(process) is None:
                raise FabricError(f"client {process} exited: see {self.processes.log(process)}")
            return len(client.connections()) == len(client.urls)

        await wait_for(f"client {process} connected", connected, self.ready_timeout)

    async def register_service(self, service: NetworkService) -> None:
        """Create or replace a NetworkService record in the registry (e.g. with matches)."""
        async with channel(self.registry_url) as ch:
            chain: RegistryChain[NetworkService] = RegistryChain([RemoteRegistry(SERVICE, ch)])
            await chain.register(service, CallContext.with_timeout(5.0))

    # -- faults ---------------------------------------------------------------------------------

    def kill(self, process: str) -> int:
        """SIGKILL a process (and its group); returns its pid once it is gone."""
        return self.processes.kill(process)

    async def restart(self, process: str) -> None:
        """Start a process again with its command and wait until it is ready."""
        self.processes.restart(process)
        await self.wait_ready(process)

    async def wait_ready(self, process: str) -> None:
        """Wait until a (re)started process is ready: listening, and registered where that
        applies (forwarders with their nsmgr, endpoints with the registry); clients connected."""
        for node in self.nodes:
            if process == node.nsmgr_process:
                await self._wait_socket(process, node.nsmgr_socket)
                return
            if process == node.forwarder_process:
                await self._wait_node(node)
                return
        if process in self.registries:
            await self._wait_socket(process, self.registries[process])
        elif self.etcd is not None and process.startswith("etcd-"):
            member = next(m for m in self.etcd.nodes if f"etcd-{m.name}" == process)
            await self.etcd.wait_member(member, self.ready_timeout)
        elif process in self.endpoints:
            await self.wait_endpoint(process)
        elif process in self.clients:
            await self.wait_client(process)

    # -- inspection -----------------------------------------------------------------------------

    async def signed_connection(self, client: Client) -> dict[str, Any]:
        """``client``'s connection as its nsmgr holds it, path tokens included (clients,
        ``nsmctl`` and the nsmgr's Unix socket show only their fingerprints): asked over mTLS on
        the nsmgr's TCP address with the nsmgr's own SVID; {} when the nsmgr has none."""
        own = client.connection().get("id")
        node = client.node
        held = [conn for conn in await signed_connections(
                    node.netns, node.nsmgr_tcp, self.svid_dir("nsmgr", f"nsmgr-{node.name}"))
                if own and conn["path"]["path_segments"][0]["id"] == own]
        return min(held, key=lambda conn: conn["path"].get("index", 0), default={})

    async def nsmgr_connections(self) -> dict[str, list[dict[str, Any]]]:
        """Per node name, the connections its nsmgr's monitor shows on its Unix socket (ids,
        states, addresses; tokens only as fingerprints)."""
        return {n.name: await monitor_connections(n.nsmgr_socket) for n in self.nodes}

    def vwire_links(self) -> dict[str, list[str]]:
        """Per namespace of the fabric, the vWire interfaces in it (only non-empty ones)."""
        found = {ns: network.vwire_links(ns) for ns in network.namespaces(self.topology)}
        return {ns: links for ns, links in found.items() if links}

    def wireguard_processes(self) -> dict[int, str]:
        """wireguard-go daemons running in the fabric's namespaces: pid → interface."""
        return self.processes.stray_wireguard()

    # -- teardown -------------------------------------------------------------------------------

    def save_logs(self, dest: Path) -> None:
        """Copy the logs and outputs (not sockets) to ``dest``."""
        if self.topology.state_dir.exists():
            shutil.copytree(self.topology.state_dir, dest, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.sock"))

    def down(self, grace: float = 5.0) -> list[str]:
        """Remove every process, wireguard-go, namespace and file of the fabric (idempotent);
        returns the namespaces removed."""
        self.processes.stop_all(grace)
        removed = network.teardown(self.topology)
        shutil.rmtree(self.topology.state_dir, ignore_errors=True)
        return removed
