"""The multi-cloud lab's guests: a VM that joins a domain and an external host with plain
WireGuard, each brought up the way a user would, through the public tools.

* **VM** (:func:`join_vm`): a namespace on its domain's bridge (:func:`lab.internet.add_vm`),
  SVIDs for ``nsmgr-<vm>`` and ``forwarder-<vm>`` from its domain's CA, then the bootstrap
  script ``deploy/bootstrap/node.sh`` (``nsmctl node join`` in supervisor mode, root under the
  lab's state directory; ``VWIRE_SETTINGS`` gives the nsmgr its domain and gateway and the
  forwarder its site, ``masquerade`` NAT — it goes out through the domain's NAT gateway — and
  WAN MTU). The VM's nsmgr and forwarder pids are recorded as lab processes
  ``<vm>-nsmgr``/``<vm>-forwarder`` so that ``down`` stops them like any other; a reference
  client ``nsc-<vm>`` in the VM's workload namespace ``P_vm_<vm>_app`` asks for the VM's
  services through the VM's nsmgr.
* **external host** (:func:`add_external_host`): the external-host router ``python -m
  external`` on the domain's first reachable node (public address: its 1:1 address, or its own
  without NAT; router namespaces ``P_x_...``), a namespace on the internet
  (:func:`lab.internet.add_host`) whose key is made inside it (``wg genkey``), ``nsmctl external
  add NAME --service S --public-key K`` against the domain's registry, ``nsmctl external config``
  and :func:`lab.external.apply_config` (what wg-quick does, on wireguard-go). It returns the
  service's address, the first ``AllowedIPs``.

Known limit: ``nsmctl node join`` copies the SVIDs without the federated bundles, so the VM
cannot verify other trust domains: it asks for its own domain's services only.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from lab import internet, network
from lab.clouds import HostSpec, VmSpec, router_node
from lab.external import apply_config, generate_key, parse_wg_quick
from lab.multi import LabClient, MultiLab
from lab.observe import wait_for
from lab.processes import run_module
from lab.topology import netns_path
from sdk.errors import FabricError, FailedPrecondition
from sdk.grpcutil import unix_socket_accepts

BOOTSTRAP = Path(__file__).resolve().parents[1] / "deploy" / "bootstrap" / "node.sh"
NSMGR_PORT = internet.NSMGR_PORT


async def join_vm(lab: MultiLab, vm: VmSpec) -> LabClient:
    """Join ``vm`` to its domain and connect its workload to its services (module docstring)."""
    domain = lab.model.domain(vm.domain)
    netns = internet.add_vm(lab.topology, domain, vm.name, vm.index)
    root, identity = lab.vm_root(vm), lab.topology.state_dir / f"vm-{vm.name}-identity"
    for kind in ("nsmgr", "forwarder"):
        lab.trust.identity(vm.domain, kind, f"{kind}-{vm.name}", identity / kind)
    if not BOOTSTRAP.exists():
        raise FailedPrecondition(f"the bootstrap script {BOOTSTRAP} is missing")
    address = internet.vm_address(domain, vm.index)
    env = {
        "VWIRE_REGISTRY": lab.registry_url(vm.domain), "VWIRE_NODE_NAME": vm.name,
        "VWIRE_IDENTITY_DIR": str(identity), "VWIRE_ADVERTISE": f"tcp://{address}:{NSMGR_PORT}",
        "VWIRE_ROOT": str(root), "VWIRE_MODE": "supervisor", "VWIRE_NETNS": netns,
        "VWIRE_VENV": sys.prefix,
        # a node of its domain like the others; behind the domain's NAT gateway (masquerade)
        "VWIRE_SETTINGS": " ".join([
            f"VWIRE_NSMGR_DOMAIN={vm.domain}",
            f"VWIRE_NSMGR_GATEWAY={internet.gateway_url(domain)}",
            f"VWIRE_FORWARDER_SITE={vm.domain}", "VWIRE_FORWARDER_NAT=masquerade",
            f"VWIRE_FORWARDER_WAN_MTU={lab.model.wan_mtu}"]),
    }
    done = await _run(["sh", str(BOOTSTRAP)], env)
    for unit, process in (("vwire-nsmgr.service", f"{vm.name}-nsmgr"),
                          ("vwire-forwarder.service", f"{vm.name}-forwarder")):
        pid_file = root / "var" / "run" / "vwire" / f"{unit}.pid"
        try:  # recorded as a lab process, so that down stops it like the others
            (lab.topology.state_dir / f"{process}.pid").write_text(pid_file.read_text())
        except OSError:
            raise FailedPrecondition(f"the VM {vm.name} did not start {unit}: {done}") from None
    client = lab.vm_client(vm)
    network.add_netns(client.netns)
    sock = root / "var" / "run" / "vwire" / "nsmgr.sock"
    process, workload = client.process, client.netns
    lab.processes.start(process, [
        "nsc", *client.urls, "--name", client.name, "--nsmgr", f"unix://{sock}",
        "--netns", netns_path(workload), "--state-file", str(client.state_file),
        "--log-level", lab.log_level,
        "--svid-dir", str(lab.trust.identity(vm.domain, "nsc", client.name)),
        "--nsmgr-id", lab.trust.spiffe_id(vm.domain, "nsmgr", f"nsmgr-{vm.name}"),
    ], netns=workload)
    lab.clients[process] = client
    await lab.wait_client(process)
    return client


async def _run(args: list[str], env: dict[str, str], timeout: float = 120.0) -> str:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **env})
    try:
        async with asyncio.timeout(timeout):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = out.decode(errors="replace").strip()
    if process.returncode != 0:
        raise FailedPrecondition(f"`{' '.join(args)}` failed: {text[-500:]}")
    return text


def router_process(host: HostSpec) -> str:
    return f"external-{host.domain}"


async def start_router(lab: MultiLab, host: HostSpec) -> None:
    """The external-host router of ``host``'s domain, once (module docstring)."""
    process = router_process(host)
    if lab.processes.pid_of(process) is not None:
        return
    domain = lab.model.domain(host.domain)
    node = router_node(domain)
    assert node is not None  # the topology was validated
    where = lab.node(node.name)
    name = f"external-{node.name}"
    sock = where.dir / "external.sock"
    lab.processes.start(process, [
        "external", "--listen", f"unix://{sock}",
        "--public-address", where.where.public or where.where.private,
        "--public-netns", netns_path(where.netns), "--registry", lab.registry_url(host.domain),
        "--nsmgr", f"unix://{where.nsmgr_socket}", "--name", name,
        "--netns-prefix", f"{lab.topology.prefix}_x_", "--state-dir", str(where.dir / "external"),
        "--svid-dir", str(lab.trust.identity(host.domain, "nsc", name)),
        "--nsmgr-id", lab.trust.spiffe_id(host.domain, "nsmgr", f"nsmgr-{node.name}"),
        "--log-level", lab.log_level,
    ])  # in this mount namespace: its router namespaces must be visible to the forwarder

    async def ready() -> bool:
        if lab.processes.pid_of(process) is None:
            raise FabricError(f"{process} exited: see {lab.processes.log(process)}")
        return unix_socket_accepts(sock)

    await wait_for(f"{process} listening on {sock}", ready, lab.ready_timeout)


async def add_external_host(lab: MultiLab, host: HostSpec) -> tuple[str, str]:
    """Set up ``host`` from its exported file (module docstring); returns (its namespace, the
    service's address)."""
    await start_router(lab, host)
    netns = internet.add_host(lab.topology, host.name, host.index, lab.model.wan_mtu)
    private, public = generate_key(netns)
    key_file = lab.host_file(host, "key")
    key_file.touch(mode=0o600)
    key_file.write_text(private + "\n")
    env = {"NSMCTL_REGISTRY": lab.registry_url(host.domain)}
    added = await run_module(["nsmctl", "external", "add", host.name, "--service", host.service,
                              "--public-key", public], env=env, timeout=60)
    if added.returncode != 0:
        raise FailedPrecondition(f"nsmctl external add {host.name}: {added.stderr.strip()}")
    config = await run_module(["nsmctl", "external", "config", host.name,
                               "--key-file", str(key_file)], env=env, timeout=30)
    if config.returncode != 0:
        raise FailedPrecondition(f"nsmctl external config {host.name}: {config.stderr.strip()}")
    lab.host_file(host, "conf").write_text(config.stdout)
    apply_config(netns, config.stdout, key_file)
    allowed = parse_wg_quick(config.stdout).allowed_ips
    return netns, allowed[0].split("/")[0] if allowed else ""
