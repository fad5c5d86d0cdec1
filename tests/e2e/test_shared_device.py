"""The forwarder's shared-device WireGuard mode (``--wireguard-device shared``), end to end.

The contract under test (docs/performance.md, "Shared device or device per vWire", and the
forwarder's settings): a remote connection uses a shared device only when both forwarders run
with ``wireguard_device=shared``; each forwarder then keeps one namespace
``vwsh-<forwarder name>-<pid>`` holding one ``wireguard-go`` device (``vws...``) per (peer node,
address space) and the node-side end (``vs...``) of one veth per connection, the workload-side
end being the workload's interface. So N connections between two nodes cost one daemon per
side; connections that cannot be told apart by their addresses go over another device pair.
A workload reaches only its own connection's far side, from its own addresses. The forwarder
hops' path segment metrics say ``wireguard_device`` = ``shared`` or ``per-vwire``.

Every fabric is a real one (:func:`tests.e2e.conftest.make_fabric`, the forwarders' flags per
node through ``Fabric(forwarder_args=...)``). Packets that must not arrive are counted where
they would be delivered (``InEchos`` of the receiving namespace's ``/proc/net/snmp``, with the
clients' own liveness pings off), and each such probe is checked to have left the sender's
interface, so a probe that was never sent cannot pass for one that was blocked. The
``vwsh_cleanup`` fixture removes a shared namespace a faulty forwarder left behind (and the
daemons in it), after the fabric's own teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forwarder.wireguard import clear_stale_socket, socket_path
from lab import network
from lab.fabric import Client, Fabric, endpoint_cidrs
from lab.observe import check_path_mtu, client_address, endpoint_address, ping, wait_for
from lab.processes import wait_gone
from lab.topology import netns_path
from tests.e2e.conftest import MakeFabric

SHARED = ["--wireguard-device", "shared"]
PER_VWIRE = ["--wireguard-device", "per-vwire"]
NO_PROBE = ["--no-probe"]  # no liveness pings: the echo counters see only the test's
WAIT = 15.0  # seconds for a vWire to pass traffic or to be removed
COUNT = 4  # echo requests per counted probe
OVERLAP_CIDRS = ("10.70.0.0/16", "fd00:70::/64")


# -- the shared namespaces, the daemons, the links ---------------------------------------------


def shared_netns(fabric: Fabric, node: int) -> str:
    """The name node ``node``'s forwarder (as it runs now) gives its shared namespace."""
    where = fabric.node(node)
    pid = fabric.processes.pid_of(where.forwarder_process)
    assert pid is not None, f"{where.forwarder_process} does not run"
    return f"vwsh-forwarder-{where.name}-{pid}"


def all_netns() -> list[str]:
    return [line.split()[0] for line in network.ip("netns", "list").splitlines() if line.split()]


def link_names(netns: str) -> list[str]:
    return sorted(link["ifname"] for link in json.loads(network.ip("-j", "link", "show",
                                                                   netns=netns)))


def shared_links(netns: str) -> dict[str, list[str]]:
    """A shared namespace's links by kind: ``devices`` (vws...), ``veths`` (vs...), ``other``."""
    kinds: dict[str, list[str]] = {"devices": [], "veths": [], "other": []}
    for name in link_names(netns):
        kind = "devices" if name.startswith("vws") else "veths" if name.startswith("vs") else (
            "other" if name != "lo" else "")
        if kind:
            kinds[kind].append(name)
    return kinds


def _netns_inode(name: str) -> int | None:
    try:
        return os.stat(netns_path(name)).st_ino
    except OSError:
        return None


def daemons_in(names: list[str]) -> dict[int, str]:
    """wireguard-go processes living in any of the named namespaces: pid -> interface."""
    inodes = {ino for name in names if (ino := _netns_inode(name)) is not None}
    found: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "wireguard-go":
                continue
            if os.stat(proc / "ns" / "net").st_ino in inodes:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                found[int(proc.name)] = argv[-2].decode() if len(argv) > 1 else ""
        except OSError:
            continue
    return found


def daemons(fabric: Fabric, shared: dict[int, str]) -> dict[str, int]:
    """Per node, how many wireguard-go run for it: in its namespace (where a daemon's UDP socket
    lives) or in its forwarder's shared namespace."""
    return {fabric.node(i).name: len(daemons_in([fabric.node(i).netns, shared[i]]))
            for i in shared}


def devices(client: Client, service: str) -> dict[str, str]:
    """``wireguard_device`` of each forwarder hop of ``client``'s connection to ``service``."""
    segments = client.connection(service).get("path", {}).get("path_segments", [])
    return {s["name"]: s.get("metrics", {}).get("wireguard_device", "")
            for s in segments if s.get("name", "").startswith("forwarder-")}


@pytest.fixture
def vwsh_cleanup() -> Iterator[list[str]]:
    """A list the test puts its forwarders' shared namespaces in. Request it BEFORE
    ``make_fabric``, so its teardown runs after the fabric's: whatever the forwarders left of
    them (a defect the test reports) is removed, daemons inside first."""
    names: list[str] = []
    yield names
    left = [name for name in names if name in all_netns()]
    strays = daemons_in(left)
    for pid in strays:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_gone(list(strays), 2.0)
    for ifname in strays.values():
        if ifname:
            clear_stale_socket(socket_path(ifname))
    for name in left:
        network.ip("netns", "del", name, check=False)


async def shared_fabric(make_fabric: MakeFabric, vwsh: list[str],
                        flags: dict[int, list[str]]) -> tuple[Fabric, dict[int, str]]:
    """A two-node fabric with ``flags`` per node; its shared namespaces, by node index, are
    recorded for cleanup (those of ``shared`` nodes must exist once the fabric is up)."""
    fabric = await make_fabric(nodes=2, forwarder_args=flags)
    shared = {i: shared_netns(fabric, i) for i in (1, 2)}
    vwsh.extend(shared.values())
    existing = all_netns()
    for i, name in shared.items():
        if flags[i] == SHARED:
            assert name in existing, (f"forwarder n{i} has no shared namespace {name}: "
                                      f"{[n for n in existing if n.startswith('vwsh-')]}")
    return fabric, shared


# -- traffic and counters ----------------------------------------------------------------------


async def reaches(client: Client, service: str) -> None:
    """Wait until ``client`` pings its endpoint of ``service`` over IPv4."""
    target = endpoint_address(client.connection(service))

    async def answers() -> bool:
        return await ping(client.netns, target, wait=0.5)

    await wait_for(f"{client.process}: ping {service} at {target}", answers, WAIT)


async def ping_from(netns: str, source: str, target: str, count: int = COUNT) -> int:
    """``count`` echo requests from ``source`` to ``target`` inside ``netns`` (the ``ping``
    binary, 0.2 s apart); how many were answered."""
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, "ping", "-n", "-q", "-c", str(count), "-i", "0.2",
        "-W", "1", "-I", source, target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    async with asyncio.timeout(count + 10):
        out, _ = await process.communicate()
    for line in out.decode().splitlines():
        if "received" in line:
            return int(line.split(",")[1].split()[0])
    return 0


def echoes_in(netns: str) -> int:
    """IPv4 echo requests delivered to namespace ``netns`` so far (``Icmp: InEchos``)."""
    done = network.ip("netns", "exec", netns, "cat", "/proc/net/snmp")
    header, values = [line.split() for line in done.splitlines() if line.startswith("Icmp:")][:2]
    return int(values[header.index("InEchos")])


def tx_packets(netns: str, ifname: str) -> int:
    (link,) = json.loads(network.ip("-j", "-s", "link", "show", "dev", ifname, netns=netns))
    return int(link["stats64"]["tx"]["packets"])


def route_into_vwire(client: Client, service: str, target: str) -> None:
    """Route ``target`` into the client's interface for ``service`` the way the fabric routes
    the endpoint's address, with the same next hop (the test owns the namespace: a workload
    may do this); on an Ethernet link without a gateway, the target's neighbour entry is the
    one the endpoint's address resolved to, so the packets do leave."""
    ifname = client.connection(service)["mechanism"]["parameters"]["name"]
    own = endpoint_address(client.connection(service))
    (route,) = json.loads(network.ip("-j", "route", "get", own, netns=client.netns))
    via = ["via", route["gateway"], "onlink"] if route.get("gateway") else []
    network.ip("route", "replace", f"{target}/32", *via, "dev", ifname, netns=client.netns)
    if via:
        return
    neighbours = json.loads(network.ip("-j", "neigh", "show", "to", own, "dev", ifname,
                                       netns=client.netns))
    lladdr = next((n["lladdr"] for n in neighbours if n.get("lladdr")), "")
    if lladdr:
        network.ip("neigh", "replace", target, "lladdr", lladdr, "dev", ifname, "nud",
                   "permanent", netns=client.netns)


async def delivered(client: Client, service: str, source: str, target: str,
                    receiver: str) -> int:
    """Echo requests from ``source`` to ``target`` sent into ``client``'s vWire for ``service``,
    and how many of them namespace ``receiver`` got; asserts that they left the interface."""
    ifname = client.connection(service)["mechanism"]["parameters"]["name"]
    sent, before = tx_packets(client.netns, ifname), echoes_in(receiver)
    await ping_from(client.netns, source, target)
    assert tx_packets(client.netns, ifname) - sent >= COUNT, "the probe never left the client"
    return echoes_in(receiver) - before


# -- the tests ---------------------------------------------------------------------------------


async def test_three_clients_share_one_daemon_per_node_and_close_leaves_nothing(
    vwsh_cleanup: list[str], make_fabric: MakeFabric,
) -> None:
    fabric, shared = await shared_fabric(make_fabric, vwsh_cleanup, {1: SHARED, 2: SHARED})
    await fabric.add_endpoint("nse", ["svc"], node=2)
    clients = [await fabric.add_client(f"nsc{i}", node=1, urls=["kernel://svc/nsm0"])
               for i in range(3)]
    for client in clients:
        await reaches(client, "svc")
        assert devices(client, "svc") == {"forwarder-n1": "shared", "forwarder-n2": "shared"}
        assert "veth" in network.ip("-d", "link", "show", "nsm0", netns=client.netns)
    assert daemons(fabric, shared) == {"n1": 1, "n2": 1}
    for name in shared.values():
        links = shared_links(name)
        assert (len(links["devices"]), len(links["veths"]), links["other"]) == (1, 3, []), links

    fabric.processes.kill(clients[0].process, signal.SIGTERM, wait=10.0)

    async def one_closed() -> bool:
        return all(len(shared_links(name)["veths"]) == 2 for name in shared.values())

    await wait_for("the closed connection's veths removed", one_closed, WAIT)
    for client in clients[1:]:
        await reaches(client, "svc")
    assert daemons(fabric, shared) == {"n1": 1, "n2": 1}

    for client in clients[1:]:
        fabric.processes.kill(client.process, signal.SIGTERM, wait=10.0)

    async def all_closed() -> bool:
        return (daemons(fabric, shared) == {"n1": 0, "n2": 0}
                and all(link_names(name) == ["lo"] for name in shared.values()))

    try:
        await wait_for("every daemon stopped, the shared namespaces empty", all_closed, WAIT)
    finally:
        left = {name: link_names(name) for name in shared.values()}
    assert left == {name: ["lo"] for name in shared.values()}
    assert daemons(fabric, shared) == {"n1": 0, "n2": 0}

    fabric.down(grace=5.0)
    assert not set(shared.values()) & set(all_netns()), "a shared namespace outlived its forwarder"


async def test_a_workload_reaches_only_its_own_connection_over_a_shared_device(
    vwsh_cleanup: list[str], make_fabric: MakeFabric,
) -> None:
    fabric, _ = await shared_fabric(make_fabric, vwsh_cleanup, {1: SHARED, 2: SHARED})
    ends = {s: await fabric.add_endpoint(f"nse-{s}", [f"svc-{s}"], node=2,
                                         cidrs=endpoint_cidrs(i + 1))
            for i, s in enumerate("ab")}
    a, b = [await fabric.add_client(f"nsc-{s}", node=1, urls=[f"kernel://svc-{s}/nsm0"],
                                    extra=NO_PROBE) for s in "ab"]
    for client, service in ((a, "svc-a"), (b, "svc-b")):
        await reaches(client, service)
        assert devices(client, service) == {"forwarder-n1": "shared", "forwarder-n2": "shared"}
    a_addr, b_addr = client_address(a.connection("svc-a")), client_address(b.connection("svc-b"))
    b_end = endpoint_address(b.connection("svc-b"))
    n1, n2 = fabric.node(1), fabric.node(2)

    # the counting works: A's own echo requests arrive at A's endpoint
    own = endpoint_address(a.connection("svc-a"))
    assert await delivered(a, "svc-a", a_addr, own, ends["a"].netns) >= 1

    for target in (b_end, b_addr, n1.underlay_ip, n2.underlay_ip):
        route_into_vwire(a, "svc-a", target)
    probes = {
        "B's endpoint": (b_end, ends["b"].netns),
        "B's client (a neighbour workload)": (b_addr, b.netns),
        "n1's underlay address": (n1.underlay_ip, n1.netns),
        "n2's underlay address": (n2.underlay_ip, n2.netns),
    }
    got = {what: await delivered(a, "svc-a", a_addr, target, receiver)
           for what, (target, receiver) in probes.items()}
    network.ip("addr", "add", f"{b_addr}/32", "dev", "nsm0", netns=a.netns)
    got["B's endpoint, from B's client address (spoofed)"] = await delivered(
        a, "svc-a", b_addr, b_end, ends["b"].netns)
    network.ip("addr", "del", f"{b_addr}/32", "dev", "nsm0", netns=a.netns)
    assert got == dict.fromkeys(got, 0), got

    for client, service in ((a, "svc-a"), (b, "svc-b")):
        await reaches(client, service)


async def test_overlapping_address_spaces_get_a_device_pair_each(
    vwsh_cleanup: list[str], make_fabric: MakeFabric,
) -> None:
    fabric, shared = await shared_fabric(make_fabric, vwsh_cleanup, {1: SHARED, 2: SHARED})
    ends = {s: await fabric.add_endpoint(f"nse-{s}", [f"svc-{s}"], node=2, cidrs=OVERLAP_CIDRS)
            for s in "xy"}
    clients = {s: await fabric.add_client(f"nsc-{s}", node=1, urls=[f"kernel://svc-{s}/nsm0"],
                                          extra=NO_PROBE) for s in "xy"}
    conns = {s: clients[s].connection(f"svc-{s}") for s in "xy"}
    assert client_address(conns["x"]) == client_address(conns["y"]), conns
    assert endpoint_address(conns["x"]) == endpoint_address(conns["y"]), conns
    for s, client in clients.items():
        await reaches(client, f"svc-{s}")
        assert devices(client, f"svc-{s}") == {"forwarder-n1": "shared",
                                               "forwarder-n2": "shared"}
    assert daemons(fabric, shared) == {"n1": 2, "n2": 2}
    for name in shared.values():
        links = shared_links(name)
        assert (len(links["devices"]), len(links["veths"])) == (2, 2), links

    for s, client in clients.items():
        other = "y" if s == "x" else "x"
        before = {t: echoes_in(ends[t].netns) for t in "xy"}
        answered = await ping_from(client.netns, client_address(conns[s]),
                                   endpoint_address(conns[s]))
        got = {t: echoes_in(ends[t].netns) - before[t] for t in "xy"}
        assert answered >= 1 and got[other] == 0 and answered <= got[s] <= COUNT, (s, got)


async def test_a_mixed_pair_of_forwarders_uses_a_device_per_vwire(
    vwsh_cleanup: list[str], make_fabric: MakeFabric,
) -> None:
    fabric, shared = await shared_fabric(make_fabric, vwsh_cleanup, {1: SHARED, 2: PER_VWIRE})
    await fabric.add_endpoint("nse-2", ["svc-2"], node=2)
    await fabric.add_endpoint("nse-1", ["svc-1"], node=1, cidrs=endpoint_cidrs(1))
    offered = await fabric.add_client("nsc-1", node=1, urls=["kernel://svc-2/nsm0"])
    not_offered = await fabric.add_client("nsc-2", node=2, urls=["kernel://svc-1/nsm0"])
    for client, service in ((offered, "svc-2"), (not_offered, "svc-1")):
        await reaches(client, service)
        assert set(devices(client, service).values()) == {"per-vwire"}, devices(client, service)
        assert "tun" in network.ip("-d", "link", "show", "nsm0", netns=client.netns)
    assert daemons(fabric, shared) == {"n1": 2, "n2": 2}  # one per vWire and side
    assert link_names(shared[1]) == ["lo"]


async def test_the_mtu_over_a_shared_device_is_exact(
    vwsh_cleanup: list[str], make_fabric: MakeFabric,
) -> None:
    fabric, _ = await shared_fabric(make_fabric, vwsh_cleanup, {1: SHARED, 2: SHARED})
    await fabric.add_endpoint("nse", ["svc"], node=2)
    client = await fabric.add_client("nsc", node=1, urls=["kernel://svc/nsm0"])
    await reaches(client, "svc")
    conn: dict[str, Any] = client.connection("svc")
    assert devices(client, "svc") == {"forwarder-n1": "shared", "forwarder-n2": "shared"}
    mtu = int(conn["context"]["MTU"])
    assert mtu == 1440, conn["context"]  # the underlay's 1500 less WireGuard's IPv4 overhead
    await check_path_mtu(client.netns, endpoint_address(conn), mtu)
