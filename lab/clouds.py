"""The multi-cloud lab's topology file: model, validation and the built-in default.

A topology (YAML) lists domains, each one cloud site with its nodes, then the services the demo
runs and the clients that connect to them::

    wan_mtu: 1500                    # the simulated internet's MTU (default 1500)
    domains:
      - name: aws                    # 1-12 of a-z 0-9 -, unique
        cloud: aws                   # aws (MTU 9001), gcp (1460), azure (1500), on-prem (1500)
        mtu: 9001                    # optional: the domain's underlay MTU, 1280-9216
        nodes:
          - name: aws-1              # 1-12 of a-z 0-9 -, unique across domains
            nat: one-to-one          # one-to-one (a public IP), masquerade or none
    services:
      - {name: db, node: aws-1}      # an endpoint of service db on node aws-1
    clients:
      - {name: web, node: aws-1, services: [db]}
    vms:                             # a VM joining a domain as a node (nsmctl node join)
      - {name: vm-1, domain: aws, services: [db]}
    external_hosts:                  # a host with plain WireGuard (nsmctl external config)
      - {name: laptop, domain: aws, service: db}

``nat`` defaults to ``one-to-one`` in a cloud and ``none`` on-prem. :func:`parse` checks
everything and raises :class:`sdk.errors.InvalidArgument` naming the field (``domains[1].cloud``)
and the fix: unknown keys or clouds, duplicate names, a bad MTU, a domain without nodes, a
service or client on a node that does not exist, a client of a service nobody provides, a VM
asking for a service of another domain (a joined VM gets no federated bundles), an external host
of a domain without a node others can reach (its router runs there).
:data:`BUILT_IN` holds the default ``multi-cloud`` topology (aws + gcp + azure + on-prem).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from sdk.errors import InvalidArgument, quoted
from sdk.registry.validate import check_name

CLOUD_MTU = {"aws": 9001, "gcp": 1460, "azure": 1500, "on-prem": 1500}
NAT_KINDS = ("one-to-one", "masquerade", "none")
MIN_MTU, MAX_MTU = 1280, 9216
MAX_DOMAINS, MAX_NODES_PER_DOMAIN, MAX_NODES = 8, 8, 16
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,11}$")


@dataclass(frozen=True)
class CloudNode:
    name: str
    nat: str
    index: int  # 1-based within its domain


@dataclass(frozen=True)
class Domain:
    name: str
    cloud: str
    mtu: int
    nodes: tuple[CloudNode, ...]
    index: int  # 1-based within the topology


@dataclass(frozen=True)
class Service:
    name: str
    node: str


@dataclass(frozen=True)
class ClientSpec:
    name: str
    node: str
    services: tuple[str, ...]


@dataclass(frozen=True)
class VmSpec:
    name: str
    domain: str
    services: tuple[str, ...]
    index: int  # 1-based within its domain's VMs


@dataclass(frozen=True)
class HostSpec:
    name: str
    domain: str
    service: str
    index: int  # 1-based within the topology


@dataclass(frozen=True)
class MultiCloud:
    """A validated topology (see the module docstring)."""

    domains: tuple[Domain, ...]
    services: tuple[Service, ...] = ()
    clients: tuple[ClientSpec, ...] = ()
    wan_mtu: int = 1500
    vms: tuple[VmSpec, ...] = ()
    hosts: tuple[HostSpec, ...] = ()

    def domain(self, name: str) -> Domain:
        return next(d for d in self.domains if d.name == name)

    def domain_of_service(self, service: str) -> Domain:
        return self.node(next(s.node for s in self.services if s.name == service))[0]

    def node(self, name: str) -> tuple[Domain, CloudNode]:
        for domain in self.domains:
            for node in domain.nodes:
                if node.name == name:
                    return domain, node
        raise InvalidArgument("node", f"{quoted(name)} is not a node of the topology")

    def all_nodes(self) -> list[tuple[Domain, CloudNode]]:
        return [(d, n) for d in self.domains for n in d.nodes]


def _mapping(value: Any, field: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(field, f"must be a mapping with {', '.join(keys)}")
    unknown = sorted(str(k) for k in value if k not in keys)
    if unknown:
        raise InvalidArgument(field, f"unknown key {quoted(unknown[0])}: use {', '.join(keys)}")
    return value


def _list(value: Any, field: str, most: int, *, empty: str = "") -> list[Any]:
    if value is None:
        if empty:
            raise InvalidArgument(field, empty)
        return []
    if not isinstance(value, list):
        raise InvalidArgument(field, "must be a list")
    if empty and not value:
        raise InvalidArgument(field, empty)
    if len(value) > most:
        raise InvalidArgument(field, f"at most {most} entries (got {len(value)})")
    return value


def _name(value: Any, field: str, seen: set[str], check: Callable[[str, str], None]) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(field, "must be a string")
    check(field, value)
    if value in seen:
        raise InvalidArgument(field, f"{quoted(value)} is given twice: names must be unique")
    seen.add(value)
    return value


def _short_name(field: str, value: str) -> None:
    if not _NAME.match(value):
        raise InvalidArgument(
            field, f"{quoted(value)}: use 1-12 lower-case letters, digits or '-', starting "
            "with a letter (it names namespaces and interfaces)")


def _mtu(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_MTU <= value <= MAX_MTU:
        raise InvalidArgument(
            field, f"must be an integer MTU in {MIN_MTU}..{MAX_MTU} (got {value!r})")
    return value


def _domain(raw: Any, field: str, index: int, node_names: set[str], names: set[str]) -> Domain:
    spec = _mapping(raw, field, ("name", "cloud", "mtu", "nodes"))
    name = _name(spec.get("name"), f"{field}.name", names, _short_name)
    cloud = spec.get("cloud")
    if cloud not in CLOUD_MTU:
        raise InvalidArgument(f"{field}.cloud", f"unknown cloud {quoted(str(cloud))}: use "
                              f"{', '.join(CLOUD_MTU)}")
    mtu = _mtu(spec.get("mtu", CLOUD_MTU[cloud]), f"{field}.mtu")
    raw_nodes = _list(spec.get("nodes"), f"{field}.nodes", MAX_NODES_PER_DOMAIN,
                      empty=f"domain {name} has no nodes: give it at least one")
    nodes = []
    for i, item in enumerate(raw_nodes):
        where = f"{field}.nodes[{i}]"
        node = _mapping(item, where, ("name", "nat"))
        nat = node.get("nat", "none" if cloud == "on-prem" else "one-to-one")
        if nat not in NAT_KINDS:
            raise InvalidArgument(f"{where}.nat", f"{quoted(str(nat))}: use "
                                  f"{', '.join(NAT_KINDS)}")
        nodes.append(CloudNode(_name(node.get("name"), f"{where}.name", node_names,
                                     _short_name), nat, i + 1))
    return Domain(name, cloud, mtu, tuple(nodes), index)


def parse(document: Any, source: str = "topology") -> MultiCloud:
    """A validated :class:`MultiCloud` from a loaded YAML document (see the module docstring);
    fields in errors start with ``source``."""
    top = _mapping(document, source, ("domains", "services", "clients", "wan_mtu", "vms",
                                      "external_hosts"))
    domain_names: set[str] = set()
    node_names: set[str] = set()
    raw_domains = _list(top.get("domains"), f"{source}.domains", MAX_DOMAINS,
                        empty="give at least one domain")
    domains = tuple(_domain(raw, f"{source}.domains[{i}]", i + 1, node_names, domain_names)
                    for i, raw in enumerate(raw_domains))
    if len(node_names) > MAX_NODES:
        raise InvalidArgument(f"{source}.domains", f"at most {MAX_NODES} nodes in all "
                              f"(got {len(node_names)})")
    services = _services(top.get("services"), f"{source}.services", node_names)
    provided = {s.name for s in services}
    clients = []
    client_names: set[str] = set()
    for i, raw in enumerate(_list(top.get("clients"), f"{source}.clients", MAX_NODES)):
        field = f"{source}.clients[{i}]"
        spec = _mapping(raw, field, ("name", "node", "services"))
        name = _name(spec.get("name"), f"{field}.name", client_names, _short_name)
        node = _known_node(spec.get("node"), f"{field}.node", node_names)
        wanted = _list(spec.get("services"), f"{field}.services", 8,
                       empty="give at least one service")
        for j, service in enumerate(wanted):
            if service not in provided:
                raise InvalidArgument(f"{field}.services[{j}]", f"{quoted(str(service))} is not "
                                      "a service of the topology: add it under services")
        clients.append(ClientSpec(name, node, tuple(wanted)))
    wan_mtu = _mtu(top.get("wan_mtu", 1500), f"{source}.wan_mtu")
    model = MultiCloud(domains, services, tuple(clients), wan_mtu)
    guests = _Guests(model, source, set(node_names))
    return replace(model, vms=guests.vms(top.get("vms")),
                   hosts=guests.hosts(top.get("external_hosts")))


class _Guests:
    """Validation of VMs and external hosts against a validated model."""

    def __init__(self, model: MultiCloud, source: str, names: set[str]) -> None:
        self.model, self.source, self.names = model, source, names
        self.domains = {d.name: d for d in model.domains}
        self.provided = {s.name: model.domain_of_service(s.name).name for s in model.services}

    def _domain(self, value: Any, field: str) -> Domain:
        if value not in self.domains:
            raise InvalidArgument(field, f"{quoted(str(value))} is not a domain of the topology: "
                                  f"use one of {', '.join(self.domains)}")
        return self.domains[str(value)]

    def _service(self, value: Any, field: str, domain: Domain, why: str) -> str:
        if value not in self.provided:
            raise InvalidArgument(field, f"{quoted(str(value))} is not a service of the "
                                  "topology: add it under services")
        if self.provided[str(value)] != domain.name:
            raise InvalidArgument(field, f"{value} runs in domain {self.provided[str(value)]}, "
                                  f"not {domain.name}: {why}")
        return str(value)

    def vms(self, raw: Any) -> tuple[VmSpec, ...]:
        found: list[VmSpec] = []
        for i, item in enumerate(_list(raw, f"{self.source}.vms", MAX_NODES)):
            field = f"{self.source}.vms[{i}]"
            spec = _mapping(item, field, ("name", "domain", "services"))
            name = _name(spec.get("name"), f"{field}.name", self.names, _short_name)
            domain = self._domain(spec.get("domain"), f"{field}.domain")
            wanted = _list(spec.get("services"), f"{field}.services", 8,
                           empty="give at least one service")
            services = tuple(self._service(
                s, f"{field}.services[{j}]", domain, "a joined VM gets no federated bundles, so it "
                "reaches its own domain's services only") for j, s in enumerate(wanted))
            index = 1 + sum(1 for vm in found if vm.domain == domain.name)
            found.append(VmSpec(name, domain.name, services, index))
        return tuple(found)

    def hosts(self, raw: Any) -> tuple[HostSpec, ...]:
        found: list[HostSpec] = []
        for i, item in enumerate(_list(raw, f"{self.source}.external_hosts", MAX_NODES)):
            field = f"{self.source}.external_hosts[{i}]"
            spec = _mapping(item, field, ("name", "domain", "service"))
            name = _name(spec.get("name"), f"{field}.name", self.names, _short_name)
            domain = self._domain(spec.get("domain"), f"{field}.domain")
            if router_node(domain) is None:
                raise InvalidArgument(f"{field}.domain", f"domain {domain.name} has no node "
                                      "others can reach (nat one-to-one or none) to run the "
                                      "external-host router on")
            service = self._service(spec.get("service"), f"{field}.service", domain,
                                    "the host is served by its domain's router")
            found.append(HostSpec(name, domain.name, service, i + 1))
        return tuple(found)


def router_node(domain: Domain) -> CloudNode | None:
    """The node of ``domain`` that runs the external-host router: the first one others can
    reach (behind 1:1 NAT or without NAT)."""
    return next((n for n in domain.nodes if n.nat != "masquerade"), None)


def _known_node(value: Any, field: str, node_names: set[str]) -> str:
    if value not in node_names:
        raise InvalidArgument(field, f"{quoted(str(value))} is not a node of the topology: use "
                              f"one of {', '.join(sorted(node_names))}")
    return str(value)


def _services(raw: Any, field: str, node_names: set[str]) -> tuple[Service, ...]:
    services = []
    names: set[str] = set()
    for i, item in enumerate(_list(raw, field, MAX_NODES)):
        spec = _mapping(item, f"{field}[{i}]", ("name", "node"))
        name = _name(spec.get("name"), f"{field}[{i}].name", names, _short_name)
        check_name(f"{field}[{i}].name", name)
        services.append(Service(name, _known_node(spec.get("node"), f"{field}[{i}].node",
                                                  node_names)))
    return tuple(services)


BUILT_IN_NAME = "multi-cloud"
BUILT_IN = """\
# aws + gcp + azure + on-prem: every kind of NAT and three underlay MTUs
domains:
  - name: aws
    cloud: aws
    nodes:
      - {name: aws-1, nat: one-to-one}
      - {name: aws-2, nat: masquerade}
  - name: gcp
    cloud: gcp
    nodes:
      - {name: gcp-1, nat: masquerade}
  - name: azure
    cloud: azure
    nodes:
      - {name: azure-1, nat: one-to-one}
  - name: on-prem
    cloud: on-prem
    nodes:
      - {name: dc-1, nat: none}
services:
  - {name: db, node: azure-1}
  - {name: cache, node: gcp-1}
clients:
  - {name: web, node: aws-2, services: [db]}
  - {name: app, node: aws-1, services: [cache]}
vms:
  - {name: vm-1, domain: azure, services: [db]}
external_hosts:
  - {name: laptop, domain: azure, service: db}
"""


def read(name_or_file: str) -> tuple[str, str]:
    """The YAML text of the built-in topology (:data:`BUILT_IN_NAME`) or of a file, and its
    name for messages; InvalidArgument when the file cannot be read."""
    if name_or_file == BUILT_IN_NAME:
        return BUILT_IN, BUILT_IN_NAME
    path = Path(name_or_file)
    try:
        return path.read_text(), "topology"
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidArgument("topology", f"cannot read {path}: {reason}; give a YAML file or "
                              f"{BUILT_IN_NAME!r}") from None


def parse_text(text: str, source: str = "topology") -> MultiCloud:
    """:func:`parse` of a YAML text; InvalidArgument when it is not YAML."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidArgument(source, f"is not valid YAML: {exc}") from None
    return parse(document, source)


def load(name_or_file: str) -> MultiCloud:
    """The built-in topology by name (:data:`BUILT_IN_NAME`) or a YAML file, validated."""
    return parse_text(*read(name_or_file))
