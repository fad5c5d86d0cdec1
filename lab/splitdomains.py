"""A running two-node :class:`lab.fabric.Fabric` split into two domains with real processes
(:func:`split_domains`): each domain its registry, nsmgr, forwarder and gateway; domain b its own
trust domain, federated both ways; optionally a floating domain. The e2e tests of interdomain
requests and ``bench.interdomain`` build on it; whoever made the fabric tears it down.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from api.proto.registry_pb2 import NetworkServiceEndpoint
from lab.fabric import SVID_TTL, TRUST_DOMAIN, Fabric
from lab.observe import registered, wait_for
from lab.ready import listening
from lab.topology import Node, netns_path
from sdk.chain import CallContext
from sdk.grpcutil import channel
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import RegistryChain
from sdk.registry.kinds import ENDPOINT
from sdk.security.ca import CertificateAuthority
from sdk.security.federation import write_federated
from sdk.security.svid import write_svid
from sdk.security.tls import server_name

#: TCP port of each domain's gateway, on its node's underlay address.
GATEWAY_PORT = 5105
#: Domain b's own trust domain (a keeps the fabric's, lab.vwire).
TRUST_DOMAIN_B = "b.vwire"


@dataclass
class FabricDomains:
    """A :class:`lab.fabric.Fabric` of two nodes split into domain ``a`` (node 1, the fabric's
    registry) and domain ``b`` (node 2, a registry of its own), with a gateway on each node.
    The nodes keep sharing the fabric's underlay, as two sites joined by a network do; only the
    gateways talk across (and the forwarders' WireGuard)."""

    fabric: Fabric
    registries: dict[str, str]
    gateways: dict[str, str]
    domains_file: Path
    ca_b: CertificateAuthority
    floating: str = ""  #: a floating domain (registry and gateway on node 1), if any

    def identity(self, domain: str, kind: str, name: str) -> Path:
        """The SVID directory of process ``name`` in ``domain``: a's from the fabric's CA (trust
        domain lab.vwire), b's from b's own CA (trust domain b.vwire); each trusts the other
        trust domain through its federated bundle."""
        fabric = self.fabric
        assert fabric.ca is not None
        if domain != "b":  # a, and the floating domain, share the fabric's trust domain
            directory = fabric.identity(kind, name)
            write_federated(directory, [self.ca_b.bundle])
            return directory
        directory = fabric.topology.state_dir / "identities-b" / kind / name
        svid = self.ca_b.issue(f"spiffe://{TRUST_DOMAIN_B}/{kind}/{name}",
                               [server_name(TRUST_DOMAIN_B)], ttl=SVID_TTL)
        write_svid(directory, svid, self.ca_b.bundle)
        write_federated(directory, [fabric.ca.bundle])
        return directory

    def node_of(self, domain: str) -> Node:
        return self.fabric.node(2 if domain == "b" else 1)

    def gateway_socket(self, domain: str) -> Path:
        return self.fabric.topology.state_dir / f"gateway-{domain}.sock"

    def start_gateway(self, domain: str) -> None:
        fabric = self.fabric
        fabric.processes.start(f"gateway-{domain}", [
            "gateway", "--domain", domain, "--name", f"gateway-{domain}",
            "--listen", self.gateways[domain], "--listen", f"unix://{self.gateway_socket(domain)}",
            "--advertise", self.gateways[domain], "--registry", self.registries[domain],
            "--domains-file", str(self.domains_file), "--dns-server", "off",
            "--svid-dir", str(self.identity(domain, "gateway", f"gateway-{domain}")),
            *(["--floating"] if domain == self.floating else []),
        ], netns=self.node_of(domain).netns)

    async def publish(self, domain: str, name: str, services: list[str]) -> None:
        """Register ``name@floating`` in ``domain``'s registry: its gateway publishes it."""
        async with channel(self.registries[domain]) as ch:
            chain: RegistryChain[NetworkServiceEndpoint] = RegistryChain(
                [RemoteRegistry(ENDPOINT, ch)])
            await chain.register(NetworkServiceEndpoint(
                name=f"{name}@{self.floating}",
                network_service_names=[f"{s}@{self.floating}" for s in services],
            ), CallContext.with_timeout(10.0))

    async def wait_gateway(self, domain: str) -> None:
        await _wait_socket(self.fabric, f"gateway-{domain}", self.gateway_socket(domain))

    async def add_endpoint(self, domain: str, name: str, services: list[str],
                           cidrs: tuple[str, ...] = ("10.70.0.0/16",)) -> None:
        """A reference endpoint on the node of ``domain``, registered in that domain."""
        fabric = self.fabric
        node = self.node_of(domain)
        netns = fabric.add_workload_netns(node.index, name)
        socket = node.dir / f"{name}.sock"
        args = ["nse", "--name", name, "--listen", f"unix://{socket}",
                "--nsmgr", f"unix://{node.nsmgr_socket}", "--netns", netns_path(netns),
                "--svid-dir", str(self.identity(domain, "nse", name))]
        args += [arg for s in services for arg in ("--service", s)]
        args += [arg for c in cidrs for arg in ("--cidr", c)]
        fabric.processes.start(name, args, netns=netns)
        await _wait_socket(fabric, name, socket)
        registry = self.registries[domain]

        async def known() -> bool:
            return await registered(registry, NetworkServiceEndpoint(name=name))

        await wait_for(f"endpoint {name} registered in domain {domain}", known, 30.0)


async def _wait_socket(fabric: Fabric, process: str, path: Path) -> None:
    await listening(fabric.processes, process, path, 30.0)


async def split_domains(fabric: Fabric, floating: str = "",
                        policies: dict[str, Path] | None = None) -> FabricDomains:
    """Split a running two-node ``fabric`` into domains a and b (see :class:`FabricDomains`):
    b gets its own trust domain (a CA federated both ways with the fabric's) and registry, both
    registries, nsmgrs and forwarders are started again knowing their domain, gateway and
    identity, and a gateway runs on each node. With ``floating``, a floating domain of that name
    (a registry and a ``--floating`` gateway on node 1, trust domain of a) is added;
    ``policies`` gives a domain's nsmgr a policy file."""
    state = fabric.topology.state_dir
    n1, n2 = fabric.node(1), fabric.node(2)
    gateways = {"a": f"tcp://{n1.underlay_ip}:{GATEWAY_PORT}",
                "b": f"tcp://{n2.underlay_ip}:{GATEWAY_PORT}"}
    registries = {"a": fabric.registry_url, "b": f"unix://{state / 'b-registry.sock'}"}
    trust = {"a": TRUST_DOMAIN, "b": TRUST_DOMAIN_B}
    if floating:
        gateways[floating] = f"tcp://{n1.underlay_ip}:{GATEWAY_PORT + 1}"
        registries[floating] = f"unix://{state / 'f-registry.sock'}"
        trust[floating] = TRUST_DOMAIN
    domains_file = state / "domains.yaml"
    domains_file.write_text(yaml.safe_dump({"domains": {
        d: {"gateway": gateways[d], "trust_domain": trust[d]} for d in gateways}}))
    ca_b = CertificateAuthority.init(state / "ca-b", TRUST_DOMAIN_B)
    assert fabric.ca is not None
    fabric.ca.federate(ca_b.bundle)  # the fabric's renewal agent hands it to a's SVIDs too
    ca_b.federate(fabric.ca.bundle)
    split = FabricDomains(fabric, registries, gateways, domains_file, ca_b, floating)
    fabric.kill("registry")
    names = {"a": "registry", "b": "b-registry", floating: "f-registry"}
    for domain in registries:
        # A registry reaches its gateway on the gateway's unix socket (no SVID needed).
        fabric.processes.start(names[domain], [
            "registry", "--listen", registries[domain], "--store", "memory://",
            "--domain", domain, "--gateway", f"unix://{split.gateway_socket(domain)}",
        ])
        await _wait_socket(fabric, names[domain],
                           Path(registries[domain].removeprefix("unix://")))
    for domain, node in (("a", n1), ("b", n2)):
        split.start_gateway(domain)
        fabric.kill(node.nsmgr_process)
        fabric.processes.start(node.nsmgr_process, [
            "nsmgr", "--name", f"nsmgr-{node.name}",
            "--listen", f"unix://{node.nsmgr_socket}", "--listen", node.nsmgr_tcp,
            "--svid-dir", str(split.identity(domain, "nsmgr", f"nsmgr-{node.name}")),
            "--registry", registries[domain], "--domain", domain, "--gateway", gateways[domain],
            *(["--policy", str(policies[domain])] if policies and domain in policies else []),
        ], netns=node.netns)
        await _wait_socket(fabric, node.nsmgr_process, node.nsmgr_socket)
        fabric.kill(node.forwarder_process)
        fabric.processes.start(node.forwarder_process, [
            "forwarder", "--name", f"forwarder-{node.name}",
            "--listen", f"unix://{node.forwarder_socket}", "--nsmgr", f"unix://{node.nsmgr_socket}",
            "--underlay-interface", "ul0",
            "--svid-dir", str(split.identity(domain, "forwarder", f"forwarder-{node.name}")),
        ], netns=node.netns)
        await fabric.wait_ready(node.forwarder_process)
        await split.wait_gateway(domain)
    if floating:
        split.start_gateway(floating)
        await split.wait_gateway(floating)
    return split
