"""The forwarder's shared-device WireGuard mode (``--wireguard-device shared``), end to end.

The contract under test (docs/dataplane.md, "Shared devices"): a remote connection uses a shared
device only when both forwarders run with ``wireguard_device=shared``; each forwarder keeps one
namespace of its own (held by the process alone, ``/proc/<pid>/fd/<n>``, logged at start)
holding one ``wireguard-go`` device (``vws...``) per (other node, address space) and the
node-side end of one veth per connection, the workload-side end being the workload's
interface (links are told apart by kind, TUN or veth, not by name). So N connections between
two nodes cost one daemon per side; connections that cannot be told apart by their addresses
go over another device pair. A workload reaches only its own connection's far side, from its
own addresses. The forwarder hops' path segment metrics say ``wireguard_device`` = ``shared``
or ``per-vwire``.

Every fabric is a real one (:func:`tests.e2e.conftest.make_fabric`, the forwarders' flags per
node through ``Fabric(forwarder_args=...)``). Packets that must not arrive are counted where
they would be delivered (``InEchos`` of the receiving namespace's ``/proc/net/snmp``, with the
clients' own liveness pings off), and each such probe is checked to have left the sender's
interface, so a probe that was never sent cannot pass for one that was blocked. Nothing needs
removing beyond the fabric's teardown: the shared namespace ends with its forwarder, and the
daemons live in the node's namespace (their UDP sockets' side), where teardown kills strays.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from lab import network
from lab.fabric import Client, Endpoint, Fabric, endpoint_cidrs
from lab.observe import check_path_mtu, client_address, endpoint_address, ping, wait_for
from lab.topology import netns_path
from tests.e2e.conftest import MakeFabric

SHARED = ["--wireguard-device", "shared"]
SHARED_NO_LINGER = [*SHARED, "--wireguard-device-linger", "0"]  # a device stops with its last
PER_VWIRE = ["--wireguard-device", "per-vwire"]
NO_PROBE = ["--no-probe"]  # no liveness pings: the echo counters see only the test's
WAIT = 15.0  # seconds for a vWire to pass traffic or to be removed
COUNT = 4  # echo requests per counted probe
OVERLAP_CIDRS = ("10.70.0.0/16", "fd00:70::/64")
NAMESPACE_LOGGED = "shared devices' namespace"


# -- the shared namespaces, the daemons, the links ---------------------------------------------


def shared_netns(fabric: Fabric, node: int) -> str:
    """The path (``/proc/<pid>/fd/<n>``) of the shared namespace of node ``node``'s forwarder as
    it runs now, from the line its forwarder logged at start."""
    where = fabric.node(node)
    pid = fabric.processes.pid_of(where.forwarder_process)
    assert pid is not None, f"{where.forwarder_process} does not run"
    log = fabric.processes.log(where.forwarder_process).read_text()
    for line in reversed(log.splitlines()):
        if NAMESPACE_LOGGED in line:
            path = str(json.loads(line).get("path", ""))
            if path.startswith(f"/proc/{pid}/fd/"):
                return path
    raise AssertionError(f"{where.forwarder_process} (pid {pid}) logged no {NAMESPACE_LOGGED}")


def _links(path: str) -> list[dict[str, Any]]:
    done = subprocess.run(["nsenter", f"--net={path}", "ip", "-d", "-j", "link", "show"],
                          capture_output=True, text=True, timeout=30, check=True)
    links: list[dict[str, Any]] = json.loads(done.stdout)
    return links


def link_names(path: str) -> list[str]:
    """The links in the namespace at ``path``."""
    return sorted(link["ifname"] for link in _links(path))


def shared_links(path: str) -> dict[str, list[str]]:
    """A shared namespace's links but loopback by kind: ``devices`` (wireguard-go's TUN),
    ``veths`` (the node ends), ``other``."""
    kinds: dict[str, list[str]] = {"devices": [], "veths": [], "other": []}
    for link in _links(path):
        kind = link.get("linkinfo", {}).get("info_kind", "")
        if link["ifname"] != "lo":
            kinds[{"tun": "devices", "veth": "veths"}.get(kind, "other")].append(link["ifname"])
    return kinds


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def living_in(inodes: set[int], comm: str = "") -> dict[int, str]:
    """Processes (named ``comm``, or any) whose network namespace is one of ``inodes``:
    pid -> the last argument but one (a wireguard-go's interface)."""
    found: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if comm and (proc / "comm").read_text().strip() != comm:
                continue
            if os.stat(proc / "ns" / "net").st_ino in inodes:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                found[int(proc.name)] = argv[-2].decode() if len(argv) > 1 else ""
        except OSError:
            continue
    return found


def holders(inode: int) -> list[str]:
    """What keeps the network namespace ``inode`` alive: processes living in it or holding a
    descriptor of it (``pid N``), a mount of it in the host's mount namespace (``mount``)."""
    found = {f"pid {pid}" for pid in living_in({inode})}
    target = f"net:[{inode}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                found.add(f"pid {proc.name}")
    if target in Path("/proc/1/mountinfo").read_text():
        found.add("mount")
    return sorted(found)


def node_daemons(fabric: Fabric, node: int, shared: str) -> set[int]:
    """Pids of the wireguard-go serving node ``node`` (its namespace or ``shared``)."""
    paths = (netns_path(fabric.node(node).netns), shared)
    return set(living_in({ino for path in paths if (ino := _inode(path)) is not None},
                         "wireguard-go"))


def daemons(fabric: Fabric, shared: dict[int, str]) -> dict[str, int]:
    """Per node, how many wireguard-go run for it: in its namespace (where a daemon's UDP socket
    lives) or in its forwarder's shared namespace (``shared``, by node index, where it has one)."""
    counts = {}
    for node in fabric.nodes:
        paths = (netns_path(node.netns), shared.get(node.index, ""))
        inodes = {ino for path in paths if path and (ino := _inode(path)) is not None}
        counts[node.name] = len(living_in(inodes, "wireguard-go"))
    return counts


def devices(client: Client, service: str) -> dict[str, str]:
    """``wireguard_device`` of each forwarder hop of ``client``'s connection to ``service``."""
    segments = client.connection(service).get("path", {}).get("path_segments", [])
    return {s["name"]: s.get("metrics", {}).get("wireguard_device", "")
            for s in segments if s.get("name", "").startswith("forwarder-")}


async def shared_fabric(make_fabric: MakeFabric,
                        flags: dict[int, list[str]]) -> tuple[Fabric, dict[int, str]]:
    """A two-node fabric with ``flags`` per node, and the shared namespaces of its forwarders
    that share devices, by node index."""
    fabric = await make_fabric(nodes=2, forwarder_args=flags)
    return fabric, {i: shared_netns(fabric, i) for i in (1, 2) if flags[i][:2] == SHARED}


async def clients_of_one_endpoint(
    make_fabric: MakeFabric, count: int
) -> tuple[Fabric, dict[int, str], list[Client]]:
    """Both forwarders sharing without lingering, endpoint ``nse`` of ``svc`` on n2 and
    ``count`` clients of it on n1, each reaching it."""
    fabric, shared = await shared_fabric(make_fabric, {1: SHARED_NO_LINGER, 2: SHARED_NO_LINGER})
    await fabric.add_endpoint("nse", ["svc"], node=2)
    clients = [await fabric.add_client(f"nsc{i}", node=1, urls=["kernel://svc/nsm0"])
               for i in range(count)]
    for client in clients:
        await reaches(client, "svc")
    return fabric, shared, clients


# -- traffic and counters ----------------------------------------------------------------------


async def reaches(client: Client, service: str, version: int = 4) -> None:
    """Wait until ``client`` pings its endpoint of ``service`` over IP ``version``."""
    target = endpoint_address(client.connection(service), version)

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
    try:
        async with asyncio.timeout(count + 10):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    for line in out.decode().splitlines():
        if "received" in line:
            return int(line.split(",")[1].split()[0])
    return 0


def echoes_in(netns: str, version: int = 4) -> int:
    """Echo requests of IP ``version`` delivered to namespace ``netns`` (a name, or a path such
    as a shared namespace's) so far (``InEchos`` of ``/proc/net/snmp``, ``Icmp6InEchos`` of
    ``/proc/net/snmp6``)."""
    enter = (["nsenter", f"--net={netns}"] if netns.startswith("/")
             else ["ip", "netns", "exec", netns])
    table = "/proc/net/snmp6" if version == 6 else "/proc/net/snmp"
    done = subprocess.run([*enter, "cat", table], capture_output=True, text=True, timeout=30,
                          check=True).stdout
    if version == 6:
        return int(next(line.split()[1] for line in done.splitlines()
                        if line.startswith("Icmp6InEchos ")))
    header, values = [line.split() for line in done.splitlines() if line.startswith("Icmp:")][:2]
    return int(values[header.index("InEchos")])


def host(address: str) -> str:
    """``address`` as a one-address prefix."""
    return f"{address}/128" if ":" in address else f"{address}/32"


def tx_packets(netns: str, ifname: str) -> int:
    (link,) = json.loads(network.ip("-j", "-s", "link", "show", "dev", ifname, netns=netns))
    return int(link["stats64"]["tx"]["packets"])


def route_into_vwire(client: Client, service: str, target: str) -> None:
    """Route ``target`` into the client's interface for ``service`` the way the fabric routes
    the endpoint's address, with the same next hop (the test owns the namespace: a workload
    may do this); on an Ethernet link without a gateway, the target's neighbour entry is the
    one the endpoint's address resolved to, so the packets do leave."""
    ifname = client.connection(service)["mechanism"]["parameters"]["name"]
    own = endpoint_address(client.connection(service), 6 if ":" in target else 4)
    (route,) = json.loads(network.ip("-j", "route", "get", own, netns=client.netns))
    via = ["via", route["gateway"], "onlink"] if route.get("gateway") else []
    network.ip("route", "replace", host(target), *via, "dev", ifname, netns=client.netns)
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
    version = 6 if ":" in target else 4
    sent, before = tx_packets(client.netns, ifname), echoes_in(receiver, version)
    await ping_from(client.netns, source, target)
    assert tx_packets(client.netns, ifname) - sent >= COUNT, "the probe never left the client"
    return echoes_in(receiver, version) - before


async def attacks(fabric: Fabric, a: Client, b: Client, a_end: Endpoint, b_end: Endpoint,
                  version: int) -> dict[str, int]:
    """From A's namespace over A's vWire (connection to ``svc-a``), IPv``version`` echo
    requests to what A must not reach: how many each receiver got. A's own endpoint must get
    A's, which shows the counting works."""
    a_conn, b_conn = a.connection("svc-a"), b.connection("svc-b")
    a_addr, b_addr = client_address(a_conn, version), client_address(b_conn, version)
    b_target = endpoint_address(b_conn, version)
    own = endpoint_address(a_conn, version)
    await reaches(a, "svc-a", version)  # IPv6: the addresses may still be tentative
    assert await delivered(a, "svc-a", a_addr, own, a_end.netns) >= 1, "the counting is broken"
    probes = {"B's endpoint": (b_target, b_end.netns),
              "B's client (a neighbour workload)": (b_addr, b.netns)}
    if version == 4:  # the underlay has IPv4 addresses only
        for node in fabric.nodes:
            probes[f"{node.name}'s underlay address"] = (node.underlay_ip, node.netns)
    got = {}
    for what, (target, receiver) in probes.items():
        route_into_vwire(a, "svc-a", target)
        got[f"IPv{version} {what}"] = await delivered(a, "svc-a", a_addr, target, receiver)
    # B's client address on A's interface (after the neighbour probe, which it would capture)
    network.ip("addr", "add", host(b_addr), "dev", "nsm0", "nodad", netns=a.netns)
    try:
        got[f"IPv{version} B's endpoint, from B's client address (spoofed)"] = await delivered(
            a, "svc-a", b_addr, b_target, b_end.netns)
    finally:
        network.ip("addr", "del", host(b_addr), "dev", "nsm0", netns=a.netns)
    return got


# -- the tests ---------------------------------------------------------------------------------


async def test_three_clients_share_one_daemon_per_node_and_close_leaves_nothing(
    make_fabric: MakeFabric,
) -> None:
    fabric, shared, clients = await clients_of_one_endpoint(make_fabric, 3)
    for client in clients:
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

    inodes = {ino for path in shared.values() if (ino := _inode(path)) is not None}
    assert len(inodes) == 2, shared
    fabric.down(grace=5.0)
    assert not any(Path(path).exists() for path in shared.values())
    assert [holders(ino) for ino in inodes] == [[] for _ in inodes]


async def test_a_workload_reaches_only_its_own_connection_over_a_shared_device(
    make_fabric: MakeFabric,
) -> None:
    fabric, _ = await shared_fabric(make_fabric, {1: SHARED, 2: SHARED})
    ends = {s: await fabric.add_endpoint(f"nse-{s}", [f"svc-{s}"], node=2,
                                         cidrs=endpoint_cidrs(i + 1))
            for i, s in enumerate("ab")}
    a, b = [await fabric.add_client(f"nsc-{s}", node=1, urls=[f"kernel://svc-{s}/nsm0"],
                                    extra=NO_PROBE) for s in "ab"]
    for client, service in ((a, "svc-a"), (b, "svc-b")):
        await reaches(client, service)
        assert devices(client, service) == {"forwarder-n1": "shared", "forwarder-n2": "shared"}
    got = {}
    for version in (4, 6):
        got.update(await attacks(fabric, a, b, ends["a"], ends["b"], version))
    assert got == dict.fromkeys(got, 0), got

    for client, service in ((a, "svc-a"), (b, "svc-b")):
        await reaches(client, service)


def addresses_in(path: str) -> list[dict[str, Any]]:
    """The addresses in the namespace at ``path`` but loopback's, with their interface."""
    done = subprocess.run(["nsenter", f"--net={path}", "ip", "-j", "addr", "show"],
                          capture_output=True, text=True, timeout=30, check=True)
    return [{**address, "ifname": link["ifname"]} for link in json.loads(done.stdout)
            for address in link.get("addr_info", []) if link["ifname"] != "lo"]


async def test_a_workload_cannot_reach_the_shared_namespace_itself(
    make_fabric: MakeFabric,
) -> None:
    """The shared namespace routes between its devices and veths and is nobody's host: an echo
    request to any address it has (its link-local ones, once usable) from a workload, sent to
    the node end of the workload's veth, must not be answered by it."""
    fabric, shared = await shared_fabric(make_fabric, {1: SHARED, 2: SHARED})
    await fabric.add_endpoint("nse", ["svc"], node=2)
    client = await fabric.add_client("nsc", node=1, urls=["kernel://svc/nsm0"], extra=NO_PROBE)
    await reaches(client, "svc", 6)

    async def settled() -> bool:  # duplicate address detection done: usable or failed
        return not any(a.get("tentative") for a in addresses_in(shared[1]))

    await wait_for("the shared namespace's addresses past DAD", settled, WAIT)
    (neighbour,) = json.loads(network.ip("-j", "neigh", "show", "to", "fe80::1", "dev", "nsm0",
                                         netns=client.netns))
    got = {}
    for address in addresses_in(shared[1]):
        if address.get("dadfailed"):
            continue
        target = address["local"]
        if address.get("scope") == "link":  # reached on the workload's own link
            network.ip("neigh", "replace", target, "lladdr", neighbour["lladdr"], "dev", "nsm0",
                       "nud", "permanent", netns=client.netns)
            destination = f"{target}%nsm0"
        else:
            route_into_vwire(client, "svc", target)
            destination = target
        sent = tx_packets(client.netns, "nsm0")
        before = echoes_in(shared[1], 6 if ":" in target else 4)
        await ping_from(client.netns, "nsm0", destination)
        assert tx_packets(client.netns, "nsm0") - sent >= COUNT, "the probe never left"
        got[f"{target} ({address['ifname']})"] = (
            echoes_in(shared[1], 6 if ":" in target else 4) - before)
    assert got == dict.fromkeys(got, 0), got


async def test_overlapping_address_spaces_get_a_device_pair_each(
    make_fabric: MakeFabric,
) -> None:
    fabric, shared = await shared_fabric(make_fabric, {1: SHARED, 2: SHARED})
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
    make_fabric: MakeFabric,
) -> None:
    fabric, shared = await shared_fabric(make_fabric, {1: SHARED, 2: PER_VWIRE})
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
    make_fabric: MakeFabric,
) -> None:
    fabric, _ = await shared_fabric(make_fabric, {1: SHARED, 2: SHARED})
    await fabric.add_endpoint("nse", ["svc"], node=2)
    client = await fabric.add_client("nsc", node=1, urls=["kernel://svc/nsm0"])
    await reaches(client, "svc")
    conn: dict[str, Any] = client.connection("svc")
    assert devices(client, "svc") == {"forwarder-n1": "shared", "forwarder-n2": "shared"}
    mtu = int(conn["context"]["MTU"])
    assert mtu == 1440, conn["context"]  # the underlay's 1500 less WireGuard's IPv4 overhead
    await check_path_mtu(client.netns, endpoint_address(conn), mtu)


async def test_a_killed_forwarder_takes_its_shared_devices_along_and_is_healed_through(
    make_fabric: MakeFabric,
) -> None:
    # no lingering: the device the healed connections leave on n2 stops at once
    fabric, shared, clients = await clients_of_one_endpoint(make_fabric, 2)
    inode = _inode(shared[1])
    assert inode is not None
    old = node_daemons(fabric, 1, shared[1])
    assert len(old) == 1, old
    forwarder = fabric.processes.pid_of(fabric.node(1).forwarder_process)
    assert forwarder is not None

    os.kill(forwarder, signal.SIGKILL)  # the forwarder alone, not its process group

    async def taken_along() -> bool:
        return not holders(inode) and not old & node_daemons(fabric, 1, "")

    try:
        await wait_for("the killed forwarder's namespace and daemon gone", taken_along, WAIT)
    finally:
        left = {"holders": holders(inode), "daemons": old & node_daemons(fabric, 1, "")}
    assert left == {"holders": [], "daemons": set()}

    await fabric.restart(fabric.node(1).forwarder_process)
    for client in clients:
        await reaches(client, "svc")
        assert devices(client, "svc") == {"forwarder-n1": "shared", "forwarder-n2": "shared"}
    now = {1: shared_netns(fabric, 1), 2: shared[2]}

    async def one_each() -> bool:
        return daemons(fabric, now) == {"n1": 1, "n2": 1}

    try:
        await wait_for("one shared daemon per node again", one_each, WAIT)
    finally:
        links = {i: shared_links(path) for i, path in now.items()}
    assert [len(links[i]["devices"]) for i in (1, 2)] == [1, 1], links
