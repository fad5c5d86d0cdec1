"""A VM joins a domain with the bootstrap script (supervisor mode: this machine runs no
systemd), a workload on it connects with ``nsmctl connect`` and pings a service on another node,
and leaving leaves no file, process, link or registry record behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lab import network
from lab.external import add_host_netns
from lab.fabric import Fabric
from lab.observe import ping
from lab.topology import netns_path
from nsmctl.joinsigner import JoinSigner
from sdk.security.source import FileSvidSource
from tests.cli import Result, nsmctl
from tests.e2e.conftest import MakeFabric

SCRIPT = Path(__file__).resolve().parents[2] / "deploy/bootstrap/node.sh"


async def _nsmctl(fabric: Fabric, *args: str) -> Result:
    return await asyncio.to_thread(nsmctl, "--registry", fabric.registry_url, *args)


async def bootstrap(env: dict[str, str], netns: str = "") -> subprocess.CompletedProcess[str]:
    """Run the bootstrap script with ``env`` (inside ``netns``: the script on the VM itself)."""
    inside = ["ip", "netns", "exec", netns] if netns else []
    return await asyncio.to_thread(
        subprocess.run, [*inside, "sh", str(SCRIPT)], env={**os.environ, **env},
        capture_output=True, text=True, timeout=90)


def unit_pids(root: Path) -> list[int]:
    """The pids of the units joined under ``root`` (supervisor mode)."""
    return [int(p.read_text()) for p in (root / "var/run/vwire").glob("*.pid")]


async def _vm_records(fabric: Fabric) -> list[str]:
    listed = await _nsmctl(fabric, "get", "nse", "-o", "json")
    assert listed.code == 0, listed.err
    return [item["name"] for item in json.loads(listed.out) if "vm1" in item["name"]]


async def test_vm_joins_connects_and_leaves_nothing(make_fabric: MakeFabric,
                                                    tmp_path: Path) -> None:
    fabric = await make_fabric(nodes=1)
    await fabric.add_endpoint("nse-db", ["db"], node=1)
    vm = add_host_netns(fabric, "vm1", index=10)  # 10.250.0.210 on the underlay
    identity = tmp_path / "identity"
    for kind in ("nsmgr", "forwarder"):
        shutil.copytree(fabric.identity(kind, f"{kind}-vm1"), identity / kind)
    root = tmp_path / "root"
    env = {"VWIRE_REGISTRY": fabric.registry_url, "VWIRE_NODE_NAME": "vm1",
           "VWIRE_IDENTITY_DIR": str(identity), "VWIRE_ADVERTISE": "tcp://10.250.0.210:5001",
           "VWIRE_ROOT": str(root), "VWIRE_MODE": "supervisor", "VWIRE_NETNS": vm,
           "VWIRE_VENV": sys.prefix}

    joined = await bootstrap(env)
    assert joined.returncode == 0, joined.stderr
    assert "joined (supervisor)" in joined.stdout
    pids = unit_pids(root)
    assert len(pids) == 2 and all(Path(f"/proc/{pid}").exists() for pid in pids)
    unit = (root / "etc/systemd/system/vwire-nsmgr.service").read_text()
    assert f"NetworkNamespacePath={netns_path(vm)}" in unit
    assert oct((root / "etc/vwire/identity/nsmgr/svid.key").stat().st_mode & 0o777) == "0o600"

    await _connect_and_ping(fabric, root, "vm1")

    left = await bootstrap({**env, "VWIRE_ACTION": "leave"})
    assert left.returncode == 0, left.stderr
    assert not root.exists(), sorted(str(p) for p in root.rglob("*"))
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    links = network.ip("-o", "link", "show", netns=vm).splitlines()
    assert [line.split(":")[1].strip().split("@")[0] for line in links] == ["lo", "eth0"]
    assert await _vm_records(fabric) == []


async def _connect_and_ping(fabric: Fabric, root: Path, node: str) -> None:
    """A workload namespace on the VM connects to db with nsmctl connect, pings, closes."""
    app = f"{fabric.topology.prefix}h-{node}-app"
    network.add_netns(app)
    connected = await _nsmctl(
        fabric, "connect", "kernel://db/nsm0", "--netns", app,
        "--nsmgr", f"unix://{root}/var/run/vwire/nsmgr.sock",
        "--svid-dir", str(fabric.identity("nsc", f"app-{node}")),
        "--nsmgr-id", fabric.spiffe_id("nsmgr", f"nsmgr-{node}"), "-o", "json")
    assert connected.code == 0, connected.err
    conn = json.loads(connected.out)[0]
    address = conn["context"]["ip_context"]["dst_ip_addrs"][0].split("/")[0]
    try:
        assert await ping(app, address, wait=2.0)
        assert conn["path"]["path_segments"][1]["name"] == f"nsmgr-{node}"
    finally:
        closed = await _nsmctl(fabric, "close", conn["id"])
        assert closed.code == 0, closed.err


async def test_vm_joins_with_a_one_time_token_and_keys_made_on_it(
        make_fabric: MakeFabric, tmp_path: Path) -> None:
    fabric = await make_fabric(nodes=1)
    await fabric.add_endpoint("nse-db", ["db"], node=1)
    vm = add_host_netns(fabric, "vm3", index=13)
    ca_dir = fabric.topology.state_dir / "ca"
    made = await _nsmctl(fabric, "node", "token", "create", "--dir", str(ca_dir),
                         "--node", "vm3", "--ttl", "10m")
    assert made.code == 0, made.err
    signer = JoinSigner(ca_dir, "tcp://127.0.0.1:0", ttl=600)
    port = signer.start()
    root = tmp_path / "root"
    env = {"VWIRE_REGISTRY": fabric.registry_url, "VWIRE_JOIN_TOKEN": made.out.strip(),
           "VWIRE_SIGNER": f"tcp://127.0.0.1:{port}", "VWIRE_ADVERTISE": "tcp://10.250.0.213:5001",
           "VWIRE_ROOT": str(root), "VWIRE_MODE": "supervisor", "VWIRE_NETNS": vm,
           "VWIRE_VENV": sys.prefix, "VWIRE_SETTINGS": "VWIRE_FORWARDER_PORT_RANGE=52900-52999"}
    try:
        joined = await bootstrap(env)
        assert joined.returncode == 0, joined.stderr
        again = await bootstrap({**env, "VWIRE_ROOT": str(tmp_path / "second")})
        assert again.returncode == 1 and "already used" in again.stderr
    finally:
        signer.stop()
    assert not (tmp_path / "second").exists()
    pids = unit_pids(root)
    assert len(pids) == 3  # nsmgr, forwarder and the SVID renewal
    assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    assert (root / "var/run/vwire/vwire-renew.service.pid").exists()
    nsmgr_id = FileSvidSource(root / "etc/vwire/identity/nsmgr").current().spiffe_id
    assert str(nsmgr_id) == fabric.spiffe_id("nsmgr", "nsmgr-vm3")
    assert "VWIRE_FORWARDER_PORT_RANGE=52900-52999" in (root / "etc/vwire/node.env").read_text()
    await _connect_and_ping(fabric, root, "vm3")
    left = await bootstrap({**env, "VWIRE_ACTION": "leave"})
    assert left.returncode == 0, left.stderr
    assert not root.exists()
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]


async def test_bad_input_is_refused_and_installs_nothing(make_fabric: MakeFabric,
                                                         tmp_path: Path) -> None:
    fabric = await make_fabric(nodes=1)
    identity = tmp_path / "identity"
    shutil.copytree(fabric.identity("nsmgr", "nsmgr-vm2"), identity / "nsmgr")
    shutil.copytree(fabric.identity("nsc", "not-a-forwarder"), identity / "forwarder")
    root = tmp_path / "root"
    base = ["node", "join", "--root", str(root), "--mode", "supervisor"]

    wrong_kind = await _nsmctl(fabric, *base, "--name", "vm2", "--identity", str(identity))
    assert wrong_kind.code == 2 and "not a forwarder identity" in wrong_kind.err
    bad_name = await _nsmctl(fabric, *base, "--name", "VM_2", "--identity", str(identity))
    assert bad_name.code == 2 and "--name" in bad_name.err
    missing = await _nsmctl(fabric, *base, "--name", "vm2", "--identity", str(tmp_path / "x"))
    assert missing.code == 2 and "nsmctl ca issue" in missing.err
    no_systemd = await _nsmctl(fabric, "node", "join", "--root", str(root), "--mode", "systemd",
                               "--name", "vm2", "--identity", str(identity))
    assert no_systemd.code == 2
    script = await bootstrap({"VWIRE_NODE_NAME": "vm2", "VWIRE_VENV": sys.prefix})
    assert script.returncode == 1 and "set VWIRE_REGISTRY" in script.stderr
    assert not root.exists()
    nothing = await _nsmctl(fabric, "node", "leave", "--root", str(root), "--mode", "supervisor")
    assert nothing.code == 1 and "nothing to leave" in nothing.err
