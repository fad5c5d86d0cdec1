"""A cloud domain from nothing: its gateway node joins with ``VWIRE_ROLE=gateway`` (makes the
domain's CA on the node and runs registry, gateway and join signer beside nsmgr and
forwarder), a second "VM" joins that domain with a token through the gateway node's signer, a
workload on the VM pings an endpoint on the gateway node, and leaving both leaves no unit file,
process, link, namespace or record. Each script runs inside its own "machine" (namespace), as
cloud-init would, in supervisor mode (no systemd here)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from api.proto.registry_pb2 import NetworkServiceEndpoint
from lab import network
from lab.observe import ping, registered, wait_for
from lab.topology import netns_path
from nsmctl import join
from sdk.security.source import FileSvidSource
from tests.cli import Result, nsmctl
from tests.e2e.test_node_join import bootstrap, unit_pids

TD = "dom1.test"
GW_IP, VM_IP = "10.254.7.1", "10.254.7.2"


class Machines:
    """Namespaces named ``vwg<pid>-...`` (two "machines" joined by a veth pair, and workload
    namespaces) and the node roots in them; :meth:`remove` stops and deletes all of it."""

    def __init__(self, tmp: Path) -> None:
        self.prefix = f"vwg{os.getpid()}-"
        self.tmp = tmp
        self.roots: list[Path] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def netns(self, name: str) -> str:
        full = self.prefix + name
        network.add_netns(full)
        return full

    def wire(self, gw: str, vm: str) -> None:
        network.ip("link", "add", "eth0", "netns", gw, "type", "veth", "peer", "name", "eth0",
                   "netns", vm)
        for ns, address in ((gw, GW_IP), (vm, VM_IP)):
            network.ip("addr", "add", f"{address}/24", "dev", "eth0", netns=ns)
            network.ip("link", "set", "eth0", "up", netns=ns)

    def start(self, netns: str, *args: str) -> None:
        """``python -m ARGS`` inside ``netns`` (log in the test's directory)."""
        with open(self.tmp / f"{args[0]}.log", "ab") as log:
            self.processes.append(subprocess.Popen(
                ["ip", "netns", "exec", netns, sys.executable, "-m", *args], stdout=log,
                stderr=log, stdin=subprocess.DEVNULL, start_new_session=True))

    def names(self) -> list[str]:
        return [line.split()[0] for line in network.ip("netns", "list").splitlines()
                if line.split() and line.split()[0].startswith(self.prefix)]

    def remove(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        for root in reversed(self.roots):
            if join.installed(root) is not None:
                join.stop(root, grace=3.0)
                join.uninstall(root, purge_ca=True)
        for name in self.names():
            pids = network.ip("netns", "pids", name, check=False).split()
            for pid in pids:  # stray wireguard-go or anything else left in it
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            network.ip("netns", "del", name, check=False)


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    made = Machines(tmp_path)
    try:
        yield made
    finally:
        made.remove()


async def _nsmctl(*args: str) -> Result:
    return await asyncio.to_thread(nsmctl, *args)


async def _healthy(socket: Path) -> bool:
    async with grpc.aio.insecure_channel(f"unix://{socket}") as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=5)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def _issue(ca: Path, spiffe_id: str, out: Path) -> Path:
    done = await _nsmctl("ca", "issue", "--dir", str(ca), "--spiffe-id", spiffe_id,
                         "--out", str(out))
    assert done.code == 0, done.err
    return out


async def _records(registry: str) -> list[str]:
    listed = await _nsmctl("--registry", registry, "get", "nse", "-o", "json")
    assert listed.code == 0, listed.err
    return sorted(item["name"] for item in json.loads(listed.out))


async def test_gateway_node_bootstraps_its_domain_and_a_vm_joins_it(
        machines: Machines, tmp_path: Path) -> None:
    gw, vm = machines.netns("gw"), machines.netns("vm")
    machines.wire(gw, vm)
    gw_root, vm_root = tmp_path / "gw-root", tmp_path / "vm-root"
    machines.roots += [gw_root, vm_root]
    domains = tmp_path / "domains.yaml"
    domains.write_text("domains: {}\n")
    common = {"VWIRE_MODE": "supervisor", "VWIRE_VENV": sys.prefix,
              "VWIRE_SETTINGS": "VWIRE_NSMGR_DOMAIN=dom1 VWIRE_FORWARDER_SITE=dom1"}
    gw_env = {**common, "VWIRE_ROLE": "gateway", "VWIRE_NODE_NAME": "gw1",
              "VWIRE_REGISTRY": f"tcp://{GW_IP}:5000", "VWIRE_ADVERTISE": f"tcp://{GW_IP}:5001",
              "VWIRE_TRUST_DOMAIN": TD, "VWIRE_DOMAINS_FILE": str(domains),
              "VWIRE_IDENTITY_DIR": "/etc/vwire/identity",  # as the plan renders it: ignored
              "VWIRE_ROOT": str(gw_root), "VWIRE_NETNS": gw}

    joined = await bootstrap(gw_env, netns=gw)
    assert joined.returncode == 0, joined.stderr
    assert "domain dom1 served here" in joined.stdout
    run, ca = gw_root / "var/run/vwire", gw_root / "etc/vwire/ca"
    gw_pids = unit_pids(gw_root)
    assert len(gw_pids) == 6 and all(Path(f"/proc/{pid}").exists() for pid in gw_pids)
    for kind, name in (("registry", "registry-gw1"), ("gateway", "gateway-dom1"),
                       ("nsmgr", "nsmgr-gw1"), ("forwarder", "forwarder-gw1")):
        svid = FileSvidSource(gw_root / f"etc/vwire/identity/{kind}").current()
        assert str(svid.spiffe_id) == f"spiffe://{TD}/{kind}/{name}"
    assert await _healthy(run / "gateway.sock")
    env_file = (gw_root / "etc/vwire/node.env").read_text()
    assert f"VWIRE_GATEWAY_DOMAINS_FILE={domains}" in env_file

    # an endpoint of the domain on the gateway node
    db_ns = machines.netns("gw-db")
    db_svid = await _issue(ca, f"spiffe://{TD}/nse/nse-db", tmp_path / "nse-db")
    machines.start(db_ns, "nse", "--name", "nse-db",
                   "--listen", f"unix://{tmp_path / 'nse-db.sock'}",
                   "--nsmgr", f"unix://{run}/nsmgr.sock", "--netns", netns_path(db_ns),
                   "--svid-dir", str(db_svid), "--service", "db")
    registry = f"unix://{run}/registry.sock"
    await wait_for("nse-db registered", lambda: registered(
        registry, NetworkServiceEndpoint(name="nse-db")), 30)

    # a VM joins by a token through the gateway node's signer, its nsmgr on the registry's TCP
    made = await _nsmctl("node", "token", "create", "--dir", str(ca), "--node", "vm1")
    assert made.code == 0, made.err
    vm_env = {**common, "VWIRE_JOIN_TOKEN": made.out.strip(),
              "VWIRE_SIGNER": f"tcp://{GW_IP}:5006", "VWIRE_REGISTRY": f"tcp://{GW_IP}:5000",
              "VWIRE_ADVERTISE": f"tcp://{VM_IP}:5001", "VWIRE_ROOT": str(vm_root),
              "VWIRE_NETNS": vm}
    vm_joined = await bootstrap(vm_env, netns=vm)
    assert vm_joined.returncode == 0, vm_joined.stderr
    vm_pids = unit_pids(vm_root)
    assert len(vm_pids) == 3
    nsmgr_id = FileSvidSource(vm_root / "etc/vwire/identity/nsmgr").current().spiffe_id
    assert str(nsmgr_id) == f"spiffe://{TD}/nsmgr/nsmgr-vm1"

    # a workload on the VM connects to db (on the gateway node) and pings it
    app = machines.netns("vm-app")
    connected = await _nsmctl(
        "connect", "kernel://db/nsm0", "--netns", app,
        "--nsmgr", f"unix://{vm_root}/var/run/vwire/nsmgr.sock",
        "--svid-dir", str(await _issue(ca, f"spiffe://{TD}/nsc/app-vm1", tmp_path / "app")),
        "--nsmgr-id", str(nsmgr_id), "-o", "json")
    assert connected.code == 0, connected.err
    conn = json.loads(connected.out)[0]
    address = conn["context"]["ip_context"]["dst_ip_addrs"][0].split("/")[0]
    try:
        assert await ping(app, address, wait=2.0)
        assert conn["path"]["path_segments"][1]["name"] == "nsmgr-vm1"
    finally:
        closed = await _nsmctl("close", conn["id"])
        assert closed.code == 0, closed.err

    # leave: the VM first (its records go), then the gateway node (the CA stays)
    left = await bootstrap({**vm_env, "VWIRE_ACTION": "leave"})
    assert left.returncode == 0, left.stderr
    assert not vm_root.exists()
    assert "nse-db" in await _records(registry)
    assert not [n for n in await _records(registry) if "vm1" in n]
    machines.processes[0].send_signal(signal.SIGTERM)  # the endpoint withdraws before the node
    assert machines.processes[0].wait(15) is not None
    gw_left = await bootstrap({**gw_env, "VWIRE_ACTION": "leave"})
    assert gw_left.returncode == 0, gw_left.stderr
    assert "CA stays" in gw_left.stdout
    left_over = sorted(str(p.relative_to(gw_root)) for p in gw_root.rglob("*"))
    assert all(p.startswith("etc/vwire/ca") or p in ("etc", "etc/vwire") for p in left_over), \
        left_over
    assert (ca / "root.key").exists()
    assert not [pid for pid in gw_pids + vm_pids if Path(f"/proc/{pid}").exists()]
    for ns in (gw, vm):
        links = network.ip("-o", "link", "show", netns=ns).splitlines()
        assert [line.split(":")[1].strip().split("@")[0] for line in links] == ["lo", "eth0"]
    machines.remove()
    assert machines.names() == []
