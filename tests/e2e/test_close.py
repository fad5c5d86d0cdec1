"""Closing (SIGTERM to the nsc) removes everything the connections made, on every node."""

from __future__ import annotations

import signal

from lab.observe import wait_for
from tests.e2e.conftest import MakeFabric


async def test_sigterm_to_the_client_removes_everything(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(nodes=2)
    await fabric.add_endpoint("nse-local", ["local-svc"], node=1,
                              cidrs=("10.61.0.0/16", "fd00:61::/64"))
    await fabric.add_endpoint("nse-remote", ["remote-svc"], node=2)
    client = await fabric.add_client(
        "nsc", node=1, urls=["kernel://local-svc/nsm0", "kernel://remote-svc/nsm1"]
    )
    assert fabric.vwire_links(), "the connections made vWire interfaces"
    assert fabric.wireguard_processes(), "the remote connection runs wireguard-go"
    per_node = await fabric.nsmgr_connections()
    assert per_node["n1"] and per_node["n2"], per_node

    fabric.processes.kill(client.process, signal.SIGTERM, wait=10.0)
    assert fabric.processes.pid_of(client.process) is None, "the nsc ended on SIGTERM"

    async def nothing_left() -> bool:
        monitors = await fabric.nsmgr_connections()
        return not (fabric.vwire_links() or fabric.wireguard_processes()
                    or any(monitors.values()))

    try:
        await wait_for("everything removed after close", nothing_left, 10)
    finally:
        leftovers = {
            "vwire links": fabric.vwire_links(),
            "wireguard-go": fabric.wireguard_processes(),
            "nsmgr monitors": {k: [c.get("id") for c in v]
                               for k, v in (await fabric.nsmgr_connections()).items()},
        }
    assert leftovers == {"vwire links": {}, "wireguard-go": {},
                         "nsmgr monitors": {"n1": [], "n2": []}}
    assert "closing failed" not in fabric.processes.log(client.process).read_text()
