"""External hosts end to end: a namespace that runs only wireguard-go, configured from the file
``nsmctl external config`` prints, pings a service through the external-host router, and is
cut off the moment ``nsmctl external remove`` returns; bad input is refused and leaves nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from api.proto.registry_pb2 import NetworkService
from lab import network
from lab.external import (
    add_host_netns,
    apply_config,
    generate_key,
    remove_config,
    start_router,
)
from lab.fabric import Fabric, endpoint_cidrs
from lab.observe import ping, wait_for
from tests.cli import Result, nsmctl
from tests.e2e.conftest import MakeFabric


async def _nsmctl(fabric: Fabric, *args: str) -> Result:
    return await asyncio.to_thread(nsmctl, "--registry", fabric.registry_url, *args)


def _left(fabric: Fabric) -> dict[str, object]:
    """What external hosts could leave behind: router namespaces, their wireguard-go daemons,
    state files and records."""
    routers = [ns for ns in network.namespaces(fabric.topology)
               if ns.startswith(f"{fabric.topology.prefix}x-")]
    state = fabric.node(1).dir / "external"
    return {
        "namespaces": routers,
        "wireguard-go": [ifname for ifname in fabric.wireguard_processes().values()
                         if ifname.startswith("vx")],
        "state files": sorted(p.name for p in state.glob("*")) if state.exists() else [],
    }


async def _records(fabric: Fabric) -> list[str]:
    listed = await _nsmctl(fabric, "get", "ns", "-o", "json")
    assert listed.code == 0, listed.err
    return [line.split('"')[3] for line in listed.out.splitlines() if '"name": "external' in line]


async def test_host_from_exported_file_pings_and_stops_on_remove(
        make_fabric: MakeFabric, tmp_path: Path) -> None:
    fabric = await make_fabric(nodes=2)
    await fabric.add_endpoint("nse-db", ["db"], node=2)
    start_router(fabric, node=1)
    host = add_host_netns(fabric, "laptop")
    private, public = generate_key(host)
    key_file = tmp_path / "laptop.key"
    key_file.write_text(private + "\n")
    key_file.chmod(0o600)

    added = await _nsmctl(fabric, "external", "add", "laptop", "--service", "db",
                          "--public-key", public)
    assert added.code == 0, added.err
    exported = await _nsmctl(fabric, "external", "config", "laptop")
    assert exported.code == 0, exported.err
    assert "PrivateKey" not in exported.out and private not in exported.out
    assert "persistent-keepalive 25" in exported.out  # started by PostUp, after the key
    listed = await _nsmctl(fabric, "external", "list", "-o", "json")
    assert '"state": "ready"' in listed.out and private not in listed.out

    apply_config(host, exported.out, key_file)
    target = next(line for line in exported.out.splitlines() if line.startswith("AllowedIPs"))
    address = target.split("=")[1].split(",")[0].strip().split("/")[0]

    async def answers() -> bool:
        return await ping(host, address, wait=0.5)

    await wait_for(f"the external host pings {address}", answers, 20.0)
    v6 = target.split("=")[1].split(",")[1].strip().split("/")[0]
    assert ":" in v6 and await ping(host, v6, wait=2.0)  # the IPv6 mapping too

    removed = await _nsmctl(fabric, "external", "remove", "laptop")
    assert removed.code == 0, removed.err
    assert not await ping(host, address, wait=1.0), "traffic still flows after remove"
    assert _left(fabric) == {"namespaces": [], "wireguard-go": [], "state files": []}
    assert await _records(fabric) == []


async def test_generated_key_is_printed_once_and_bad_input_leaves_nothing(
        make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(nodes=1)
    await fabric.add_endpoint("nse-db", ["db"], node=1)
    start_router(fabric, node=1)

    bad_key = await _nsmctl(fabric, "external", "add", "h1", "--service", "db",
                            "--public-key", "not-a-key")
    assert bad_key.code == 2 and "--public-key" in bad_key.err and "not-a-key" not in bad_key.err
    short_key = await _nsmctl(fabric, "external", "add", "h1", "--service", "db",
                              "--public-key", "AAAA")
    assert short_key.code == 2 and "32 bytes" in short_key.err
    bad_name = await _nsmctl(fabric, "external", "add", "H_1", "--service", "db",
                             "--generate-key")
    assert bad_name.code == 2 and "NAME" in bad_name.err
    unknown = await _nsmctl(fabric, "external", "add", "h1", "--service", "nosuch",
                            "--generate-key")
    assert unknown.code == 1 and "no endpoint in the registry provides 'nosuch'" in unknown.err
    await fabric.register_service(NetworkService(name="ghost"))  # known, but nobody provides it
    failed = await _nsmctl(fabric, "external", "add", "h1", "--service", "ghost",
                           "--generate-key")
    assert failed.code == 1 and "could not set h1 up" in failed.err, failed.err
    assert await _records(fabric) == []
    assert _left(fabric) == {"namespaces": [], "wireguard-go": [], "state files": []}

    made = await _nsmctl(fabric, "external", "add", "h1", "--service", "db", "--generate-key")
    assert made.code == 0, made.err
    assert "PrivateKey = " in made.out and "shown once" in made.err
    private = next(line for line in made.out.splitlines()
                   if line.startswith("PrivateKey")).split("=", 1)[1].strip()
    again = await _nsmctl(fabric, "external", "config", "h1")
    assert again.code == 0 and private not in again.out and "PostUp = wg set %i" in again.out
    state = (fabric.node(1).dir / "external" / "h1.json").read_text()
    assert private not in state  # the fabric keeps only its own side's key

    duplicate = await _nsmctl(fabric, "external", "add", "h1", "--service", "db",
                              "--generate-key")
    assert duplicate.code == 1 and "exists" in duplicate.err
    assert sorted(await _records(fabric)) == ["external-status.h1", "external.h1"]

    removed = await _nsmctl(fabric, "external", "remove", "h1")
    assert removed.code == 0, removed.err
    missing = await _nsmctl(fabric, "external", "remove", "h1")
    assert missing.code == 1 and "not found" in missing.err
    assert _left(fabric) == {"namespaces": [], "wireguard-go": [], "state files": []}
    assert await _records(fabric) == []


async def test_external_server_is_requested_by_a_client_and_gone_on_remove(
        make_fabric: MakeFabric, tmp_path: Path) -> None:
    fabric = await make_fabric(nodes=2)
    start_router(fabric, node=1)
    server = add_host_netns(fabric, "srv")
    private, public = generate_key(server)
    key_file = tmp_path / "srv.key"
    key_file.write_text(private + "\n")

    added = await _nsmctl(fabric, "external", "add", "srv", "--serve", "web", "--address",
                          "192.168.77.10", "--public-key", public)
    assert added.code == 0, added.err
    exported = await _nsmctl(fabric, "external", "config", "srv")
    assert exported.code == 0, exported.err
    assert "Address = 192.168.77.10/32" in exported.out
    assert "AllowedIPs = 100.65.0.0/16" in exported.out
    apply_config(server, exported.out, key_file)

    client = await fabric.add_client("nsc", node=2, urls=["kernel://web/nsm0"])
    assert client.connection()["path"]["path_segments"][-1]["name"] == "external-srv"

    async def reaches_server() -> bool:
        return await ping(client.netns, "192.168.77.10", wait=0.5)

    await wait_for("the client pings the external server", reaches_server, 20.0)

    removed = await _nsmctl(fabric, "external", "remove", "srv")
    assert removed.code == 0, removed.err
    assert not await ping(client.netns, "192.168.77.10", wait=1.0)
    assert _left(fabric) == {"namespaces": [], "wireguard-go": [], "state files": []}
    assert await _records(fabric) == []
    listed = await _nsmctl(fabric, "get", "nse", "-o", "json")
    assert "external-srv" not in listed.out
    assert not (fabric.node(1).dir / "external-srv.sock").exists()


async def _laptop_for_db(fabric: Fabric, tmp_path: Path) -> tuple[str, str, str]:
    """Host "laptop" added for service db with its own key and brought up from its exported
    file; returns its namespace, the file and the service's address."""
    host = add_host_netns(fabric, "laptop")
    private, public = generate_key(host)
    key_file = tmp_path / "laptop.key"
    key_file.write_text(private + "\n")
    assert (await _nsmctl(fabric, "external", "add", "laptop", "--service", "db",
                          "--public-key", public)).code == 0
    exported = (await _nsmctl(fabric, "external", "config", "laptop")).out
    apply_config(host, exported, key_file)
    target = next(line for line in exported.splitlines() if line.startswith("AllowedIPs"))
    return host, exported, target.split("=")[1].split(",")[0].strip().split("/")[0]


async def test_killed_router_comes_back_and_the_host_file_stays_valid(
        make_fabric: MakeFabric, tmp_path: Path) -> None:
    fabric = await make_fabric(nodes=2)
    await fabric.add_endpoint("nse-db", ["db"], node=2)
    router = start_router(fabric, node=1)
    host, exported, address = await _laptop_for_db(fabric, tmp_path)

    async def answers() -> bool:
        return await ping(host, address, wait=0.5)

    await wait_for("the external host pings the service", answers, 20.0)

    def daemons() -> set[int]:
        return {pid for pid, ifname in fabric.wireguard_processes().items()
                if ifname.startswith("vx")}

    old = daemons()
    fabric.kill(router)  # SIGKILL: its namespace and wireguard-go stay behind
    fabric.processes.restart(router)

    async def served_again() -> bool:
        return len(daemons()) == 1 and not daemons() & old

    await wait_for("a new router namespace and wireguard-go", served_again, 30.0)
    assert (await _nsmctl(fabric, "external", "config", "laptop")).out == exported
    assert _left(fabric)["namespaces"] == [f"{fabric.topology.prefix}x-laptop"]
    # The host is left alone: its WireGuard re-handshakes (it hears nothing back for 15 s) and
    # its unchanged addresses reach the service over the new vWire.
    await wait_for("the host pings through the restarted router", answers, 45.0)
    assert (await _nsmctl(fabric, "external", "remove", "laptop")).code == 0
    remove_config(host)
    assert _left(fabric) == {"namespaces": [], "wireguard-go": [], "state files": []}


async def test_heal_to_another_endpoint_keeps_the_host_file_valid(
        make_fabric: MakeFabric, tmp_path: Path) -> None:
    fabric = await make_fabric(nodes=2)
    await fabric.add_endpoint("nse-a", ["db"], node=2)
    start_router(fabric, node=1)
    host, exported, address = await _laptop_for_db(fabric, tmp_path)

    async def answers() -> bool:
        return await ping(host, address, wait=0.5)

    await wait_for("the external host pings nse-a", answers, 20.0)
    await fabric.add_endpoint("nse-b", ["db"], node=2, cidrs=endpoint_cidrs(1))
    fabric.kill("nse-a")
    router_ns = f"{fabric.topology.prefix}x-laptop"

    async def on_b() -> bool:  # the vWire now carries nse-b's pool (10.61.0.0/16)
        return "10.61." in network.ip("-4", "addr", "show", netns=router_ns, check=False)

    await wait_for("the router's vWire healed onto nse-b", on_b, 45.0)
    await wait_for("the host pings through the healed vWire, same file", answers, 30.0)
    assert (await _nsmctl(fabric, "external", "config", "laptop")).out == exported


async def test_host_removed_while_the_router_was_down_leaves_nothing(
        make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(nodes=1)
    await fabric.add_endpoint("nse-db", ["db"], node=1)
    router = start_router(fabric, node=1)
    assert (await _nsmctl(fabric, "external", "add", "gone", "--service", "db",
                          "--generate-key")).code == 0
    fabric.kill(router)  # its namespace, daemon, state file and status record stay behind
    deleted = await _nsmctl(fabric, "delete", "ns", "external.gone")
    assert deleted.code == 0, deleted.err
    assert await _records(fabric) == ["external-status.gone"]
    fabric.processes.restart(router)

    async def cleaned() -> bool:
        return (_left(fabric) == {"namespaces": [], "wireguard-go": [], "state files": []}
                and await _records(fabric) == [])

    await wait_for("the restarted router removed what the host left", cleaned, 30.0)
