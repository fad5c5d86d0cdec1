"""A shared device's wireguard-go killed under live connections: the forwarder's backend starts
it again and the shared devices bring back its MTU, link and every connection's routes through
it, so all the vWires over it pass traffic again (IPv4 and IPv6) without a new request."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lab.fabric import Client, Fabric
from lab.observe import endpoint_address, ping, wait_for
from tests.e2e.conftest import MakeFabric

SHARED = ["--wireguard-device", "shared"]


def shared_daemons(fabric: Fabric, node: int) -> dict[int, str]:
    """The node's forwarder's wireguard-go children serving shared devices: pid -> device."""
    forwarder = fabric.processes.pid_of(fabric.node(node).forwarder_process)
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or (proc / "comm").read_text().strip() != "wireguard-go":
                continue
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
            names = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        device = next((n for n in names if n.startswith("vws")), None)
        if ppid == forwarder and device is not None:
            found[int(proc.name)] = device
    return found


async def all_reach(targets: list[tuple[Client, str]]) -> None:
    for client, target in targets:
        async def answers(netns: str = client.netns, address: str = target) -> bool:
            return await ping(netns, address, wait=0.5)
        await wait_for(f"{client.name} reaches {target}", answers, 15)


async def test_a_killed_shared_daemon_comes_back_with_every_connection(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric(nodes=2, forwarder_args={1: SHARED, 2: SHARED})
    await fabric.add_endpoint("nse-a", ["db"], node=2)
    # no liveness probes: a client that heals would make a new vWire and hide a failed restore
    clients = [await fabric.add_client(f"nsc-{i}", node=1, urls=["kernel://db/nsm0"],
                                       extra=["--no-probe"]) for i in range(2)]
    targets = [(c, endpoint_address(c.connection(), v)) for c in clients for v in (4, 6)]
    assert all(target for _, target in targets), "the endpoint hands out both families"
    await all_reach(targets)
    (pid, device), = shared_daemons(fabric, 1).items()
    before = [c.connection()["id"] for c in clients]

    os.kill(pid, signal.SIGKILL)

    async def restarted() -> bool:
        now = shared_daemons(fabric, 1)
        return bool(now) and pid not in now
    await wait_for("the shared daemon started again", restarted, 15)
    assert list(shared_daemons(fabric, 1).values()) == [device]
    await all_reach(targets)
    assert [c.connection()["id"] for c in clients] == before
