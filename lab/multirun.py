"""The user's multi-cloud lab (``nsmctl lab up --topology FILE|multi-cloud``), built with
:class:`lab.multi.MultiLab` in the user's lab topology (:data:`lab.topology.DEFAULT`), so that
``nsmctl lab status`` and ``nsmctl lab down`` find it like the single-domain lab.

:func:`up` validates the topology (and the tools) before it touches a running lab, reports a
lab of the same topology whose processes all run as it is, else takes down whatever lab runs,
builds the domains, runs the demo (every service's endpoint, every client, the VMs and external
hosts, a ping through each) and reports progress. When the build fails the logs are kept
(:func:`lab.run.failed_logs`) and the lab is removed. :func:`status` and :func:`env` read a
running multi-cloud lab; :func:`running_topology` says whether one is recorded.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from lab import guests, run
from lab.clouds import MultiCloud, parse_text, read
from lab.multi import MultiLab, Progress, saved
from lab.observe import endpoint_address, ping, wait_for
from lab.topology import DEFAULT, Topology
from sdk.errors import FailedPrecondition, InvalidArgument

TOOLS = ("ip", "nft", "wireguard-go", "ping")


def check_tools() -> None:
    for tool in TOOLS:
        if shutil.which(tool) is None:
            raise FailedPrecondition(f"{tool} is missing: run scripts/setup.sh first")


def up(name_or_file: str, progress: Progress = lambda _m: None,
       topology: Topology = DEFAULT) -> MultiLab:
    """Build the multi-cloud lab and its demo (see the module docstring)."""
    text, source = read(name_or_file)
    model = parse_text(text, source)
    check_tools()
    lab = MultiLab(topology, model)
    if saved(topology) == model and lab.status()["up"]:
        progress("the lab is already up")
        return lab
    run.down(progress, topology)
    try:
        asyncio.run(_build(lab, text, source, progress))
    except BaseException as exc:
        kept = run.failed_logs(topology)
        shutil.rmtree(kept, ignore_errors=True)
        lab.fabric.save_logs(kept)
        exc.add_note(f"the lab's logs are kept in {kept} (the lab was removed)")
        lab.down()
        raise
    return lab


async def _build(lab: MultiLab, text: str, source: str, progress: Progress) -> None:
    await lab.up(text, source, progress)
    await lab.demo(progress)
    for vm in lab.model.vms:
        progress(f"joining VM {vm.name} to domain {vm.domain} (deploy/bootstrap/node.sh: "
                 f"nsmctl node join) and connecting its workload to {', '.join(vm.services)}")
        client = await guests.join_vm(lab, vm)
        for conn in client.connections():
            await _ping(f"VM {vm.name}", client.netns, endpoint_address(conn), progress)
    for host in lab.model.hosts:
        progress(f"external host {host.name}: nsmctl external add/config for {host.service} "
                 f"in {host.domain}, wg setconf on the host")
        netns, target = await guests.add_external_host(lab, host)
        await _ping(f"external host {host.name}", netns, target, progress)


async def _ping(who: str, netns: str, target: str, progress: Progress) -> None:
    progress(f"pinging {target} from {who}")

    async def passes() -> bool:
        return await ping(netns, target)

    await wait_for(f"{who}'s ping of {target}", passes, 20)


def running_topology(topology: Topology = DEFAULT) -> MultiCloud | None:
    """The topology of the multi-cloud lab recorded in ``topology``, or None."""
    return saved(topology)


def status(topology: Topology = DEFAULT) -> dict[str, Any]:
    """:meth:`MultiLab.status` of the recorded lab; ``{"up": False, ...}`` when there is none."""
    model = saved(topology)
    if model is None:
        return {"up": False, "kind": "multi-cloud", "domains": [], "nodes": [], "clients": []}
    return MultiLab(topology, model).status()


def env(topology: Topology = DEFAULT, node: int = 1) -> dict[str, str]:
    """The environment pointing nsmctl at node ``node`` (1-based, in topology order) of the
    multi-cloud lab: its domain's registry, its nsmgr and its domain's CA."""
    model = saved(topology)
    if model is None:
        raise FailedPrecondition("the lab is down: start it with `nsmctl lab up`")
    lab = MultiLab(topology, model)
    if not 1 <= node <= len(lab.nodes):
        raise InvalidArgument("node", f"the lab has nodes 1-{len(lab.nodes)} (got {node}: "
                              f"{', '.join(n.name for n in lab.nodes)})")
    chosen = lab.nodes[node - 1]
    return {
        "NSMCTL_REGISTRY": lab.registry_url(chosen.domain.name),
        "NSMCTL_NSMGR": f"unix://{chosen.nsmgr_socket}",
        "VWIRE_CA_DIR": str(lab.trust.ca_dir(chosen.domain.name)),
    }
