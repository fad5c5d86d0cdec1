"""The domain's own services on its gateway node (``nsmctl node join --role gateway``).

A gateway node runs, besides its nsmgr and forwarder, everything its domain needs:

* a CA for the domain, made on the node when ``ca_dir`` holds none (never copied from
  elsewhere; :func:`ensure_ca` says whether it made it, so ``leave --purge-ca`` removes only a
  CA join made);
* SVIDs for the node's registry, gateway, nsmgr and forwarder issued from that CA
  (:func:`issue_svids`, each directory assigned in the CA so ``nsmctl ca agent`` renews it);
* four more units (:func:`render_units`): ``vwire-ca-agent.service`` (keeps those SVIDs
  renewed), ``vwire-registry.service`` (on the node's private address and a unix socket, SQLite
  store in the state directory, the gateway's unix socket as its gateway),
  ``vwire-gateway.service`` (``tcp://0.0.0.0:PORT`` and a unix socket, the registry's unix
  socket) and ``vwire-signer.service`` (the join signer, ``nsmctl node signer``);
* their settings (:func:`environment`): ``VWIRE_REGISTRY_*`` and ``VWIRE_GATEWAY_*`` in the
  node's EnvironmentFile, and defaults for the node's own nsmgr (the registry's and gateway's
  unix sockets, the domain), which ``--setting`` may override.

Everything here is pure rendering except :func:`ensure_ca` and :func:`issue_svids`; the caller
(:mod:`nsmctl.join`) writes, starts and removes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdk.errors import InvalidArgument
from sdk.grpcutil import parse_address
from sdk.registry.validate import check_name
from sdk.security.ca import ROOT_KEY, CertificateAuthority
from sdk.security.federation import write_svid_set
from sdk.security.spiffe import check_trust_domain
from sdk.security.svid import server_names
from sdk.security.tls import server_name

ROLES = ("node", "gateway")
CA_AGENT = "vwire-ca-agent.service"
REGISTRY = "vwire-registry.service"
GATEWAY = "vwire-gateway.service"
SIGNER = "vwire-signer.service"
UNITS = (CA_AGENT, REGISTRY, GATEWAY, SIGNER)  # start order, before nsmgr and forwarder
SOCKETS = {REGISTRY: "registry.sock", GATEWAY: "gateway.sock"}
#: the line each unit logs once it serves (units without a unix socket)
READY_LINES = {SIGNER: "join signer for"}
KINDS = ("registry", "gateway", "nsmgr", "forwarder")  # SVID directories
SVID_TTL = 3600.0  # the CA agent renews at half of it


@dataclass(frozen=True)
class DomainPlan:
    """What a gateway node serves for its domain."""

    domain: str
    trust_domain: str
    ca_dir: Path
    address: str  # the node's private IP: the registry and the signer listen on it
    registry_port: int = 5000
    gateway_port: int = 5005
    signer_port: int = 5006
    domains_file: str = ""  # other domains' gateways (YAML), '' = DNS only
    advertise: str = ""  # tcp://HOST:PORT other domains reach the gateway at

    @property
    def gateway_url(self) -> str:
        return self.advertise or f"tcp://{self.address}:{self.gateway_port}"


def plan_for(registry: str, domain: str, trust_domain: str, ca_dir: Path,
             ports: tuple[int, int], domains_file: str, external: str = "") -> DomainPlan:
    """Check a gateway node's options (InvalidArgument naming the option) and plan it.
    ``registry`` is where this node's registry listens (``tcp://PRIVATE-IP:PORT``);
    ``external`` the node's public address, if it has one."""
    if not domain:
        raise InvalidArgument("--domain", "a gateway node serves a domain: give --domain NAME "
                              "(or --setting VWIRE_NSMGR_DOMAIN=NAME)")
    check_name("--domain", domain)
    check_trust_domain(trust_domain or domain, "--trust-domain")
    where = parse_address(registry, "--registry")
    if where.scheme != "tcp" or where.host in ("", "0.0.0.0", "::"):
        raise InvalidArgument("--registry", "on a gateway node it is where this node's registry "
                              "listens: tcp://PRIVATE-IP:PORT (e.g. tcp://10.0.1.10:5000)")
    for option, port in zip(("--gateway-port", "--signer-port"), ports, strict=True):
        if not 0 < port < 65536 or port == where.port:
            raise InvalidArgument(option, f"{port}: use a free TCP port 1-65535, not the "
                                  "registry's")
    if ports[0] == ports[1]:
        raise InvalidArgument("--signer-port", "must differ from --gateway-port")
    if domains_file and not Path(domains_file).is_file():
        raise InvalidArgument("--domains-file", f"{domains_file} is not a file")
    if not ca_dir.is_absolute():
        raise InvalidArgument("--ca-dir", "must be an absolute path")
    advertise = f"tcp://{external}:{ports[0]}" if external else ""
    plan = DomainPlan(domain, trust_domain or domain, ca_dir, str(where.host), int(where.port),
                      ports[0], ports[1], str(Path(domains_file).resolve()) if domains_file else "",
                      advertise)  # the units run in /: a relative file would not be found
    if (ca_dir / ROOT_KEY).exists():
        _check_ca(CertificateAuthority.load(ca_dir), plan)
    return plan


def _check_ca(ca: CertificateAuthority, plan: DomainPlan) -> None:
    if ca.trust_domain != plan.trust_domain:
        raise InvalidArgument("--trust-domain", f"{plan.ca_dir} holds the CA of "
                              f"{ca.trust_domain!r}, not {plan.trust_domain!r}: give "
                              f"--trust-domain {ca.trust_domain} or another --ca-dir")


def ensure_ca(plan: DomainPlan) -> tuple[CertificateAuthority, bool]:
    """The domain's CA in ``plan.ca_dir``, made here when none exists; (CA, made now).
    An existing CA of another trust domain is refused."""
    if (plan.ca_dir / ROOT_KEY).exists():
        ca = CertificateAuthority.load(plan.ca_dir)
        _check_ca(ca, plan)
        return ca, False
    return CertificateAuthority.init(plan.ca_dir, plan.trust_domain), True


def spiffe_ids(plan: DomainPlan, node: str) -> dict[str, str]:
    """The SPIFFE ID of each SVID directory (:data:`KINDS`)."""
    names = {"registry": f"registry-{node}", "gateway": f"gateway-{plan.domain}",
             "nsmgr": f"nsmgr-{node}", "forwarder": f"forwarder-{node}"}
    return {kind: f"spiffe://{plan.trust_domain}/{kind}/{name}" for kind, name in names.items()}


def issue_svids(ca: CertificateAuthority, plan: DomainPlan, node: str, identity: Path) -> None:
    """Write ``identity/KIND`` for every kind, assigned in the CA so its agent renews them."""
    for kind, spiffe_id in spiffe_ids(plan, node).items():
        svid = ca.issue(spiffe_id, [server_name(plan.trust_domain)], SVID_TTL)
        write_svid_set(identity / kind, svid, ca.trust)
        ca.assign(identity / kind, svid.spiffe_id, server_names(svid.leaf))


def environment(plan: DomainPlan, run: Path, identity: Path, state: Path,
                log_level: str) -> dict[str, str]:
    """The registry's and gateway's settings, and the nsmgr's defaults on this node."""
    registry_sock, gateway_sock = (f"unix://{run / SOCKETS[u]}" for u in (REGISTRY, GATEWAY))
    return {
        "VWIRE_NSMGR_DOMAIN": plan.domain,
        "VWIRE_NSMGR_GATEWAY": gateway_sock,
        "VWIRE_REGISTRY_LISTEN": f"tcp://{plan.address}:{plan.registry_port},{registry_sock}",
        "VWIRE_REGISTRY_STATE_DIR": str(state),
        "VWIRE_REGISTRY_SVID_DIR": str(identity / "registry"),
        "VWIRE_REGISTRY_DOMAIN": plan.domain,
        "VWIRE_REGISTRY_GATEWAY": gateway_sock,
        "VWIRE_REGISTRY_LOG_LEVEL": log_level,
        "VWIRE_GATEWAY_DOMAIN": plan.domain,
        "VWIRE_GATEWAY_NAME": f"gateway-{plan.domain}",
        "VWIRE_GATEWAY_LISTEN": f"tcp://0.0.0.0:{plan.gateway_port},{gateway_sock}",
        "VWIRE_GATEWAY_ADVERTISE": plan.gateway_url,
        "VWIRE_GATEWAY_LOCAL_URL": f"tcp://{plan.address}:{plan.gateway_port}",
        "VWIRE_GATEWAY_REGISTRY": registry_sock,
        "VWIRE_GATEWAY_SVID_DIR": str(identity / "gateway"),
        "VWIRE_GATEWAY_LOG_LEVEL": log_level,
        **({"VWIRE_GATEWAY_DOMAINS_FILE": plan.domains_file} if plan.domains_file else {}),
    }


def render_units(plan: DomainPlan, python: str, identity: Path, common: str) -> dict[str, str]:
    """The four units by name; ``common`` is the [Service] lines every node unit shares."""
    head = ("[Unit]\nDescription=vWire {what}\nWants=network-online.target\n"
            "After=network-online.target{after}\n\n[Service]\nType=exec\n")
    tail = "\n[Install]\nWantedBy=multi-user.target\n"
    commands = {
        CA_AGENT: ("domain CA: SVID renewal",
                   f"-m nsmctl ca agent --dir {plan.ca_dir} --svids {identity}"),
        REGISTRY: (f"registry of domain {plan.domain}", "-m registry"),
        GATEWAY: (f"gateway of domain {plan.domain}", "-m gateway"),
        SIGNER: (f"join signer of domain {plan.domain}",
                 f"-m nsmctl node signer --dir {plan.ca_dir} "
                 f"--listen tcp://{plan.address}:{plan.signer_port}"),
    }
    after = {GATEWAY: f" {REGISTRY}", SIGNER: f" {CA_AGENT}"}  # systemd: start order
    return {unit: head.format(what=what, after=after.get(unit, ""))
            + f"ExecStart={python} {args}\n{common}" + tail
            for unit, (what, args) in commands.items()}
