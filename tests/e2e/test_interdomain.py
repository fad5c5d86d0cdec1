"""``service@domain`` with real processes: a fabric split into domains a and b
(``tests/interdomain.py``: a registry, nsmgr, forwarder and gateway per domain, each domain its
own trust domain with the other's bundle federated, mTLS and signed paths everywhere). A client
in a asks for ``db@b``: the request goes gateway to gateway, the vWire runs node to node over
WireGuard, traffic passes; close removes everything; the client heals onto a replacing endpoint
of b; a restarted remote gateway is refreshed through."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from lab.heal import measure_heal
from lab.observe import endpoint_address, ping, wait_for
from lab.splitdomains import split_domains
from tests.e2e.conftest import MakeFabric


def names(conn: dict[str, object]) -> list[str]:
    path = conn.get("path", {})
    assert isinstance(path, dict)
    return [segment["name"] for segment in path.get("path_segments", [])]


async def test_request_ping_and_close_across_domains(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(nodes=2)
    domains = await split_domains(fabric)
    await domains.add_endpoint("b", "nse-b", ["db"])
    client = await fabric.add_client("nsc", node=1, urls=["kernel://db@b/nsm0"])
    conn = client.connection()
    assert names(conn) == [
        "nsc-n1", "nsmgr-n1", "forwarder-n1", "gateway-a", "gateway-b", "nsmgr-n2",
        "forwarder-n2", "nse-b",
    ]
    assert conn["network_service"] == "db@b"
    assert conn["network_service_endpoint_name"] == "nse-b@b"
    assert await ping(client.netns, endpoint_address(conn))
    assert fabric.wireguard_processes(), "the vWire runs over WireGuard, node to node"
    for process, identity in (("gateway-b", "spiffe://b.vwire/gateway/gateway-b"),
                              ("n2-nsmgr", "spiffe://b.vwire/nsmgr/nsmgr-n2"),
                              ("gateway-a", "spiffe://lab.vwire/gateway/gateway-a")):
        assert identity in fabric.processes.log(process).read_text(), "one trust domain each"

    status = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nsmctl", "status", "--nsmgr",
        f"unix://{fabric.node(1).nsmgr_socket}",
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "300"})
    async with asyncio.timeout(60):
        out = (await status.communicate())[0].decode()
    assert "[a] nsc-n1" in out and "[b] gateway-b" in out, out  # where the path crosses

    fabric.processes.kill(client.process, signal.SIGTERM, wait=10.0)

    async def nothing_left() -> bool:
        monitors = await fabric.nsmgr_connections()
        return not (fabric.vwire_links() or fabric.wireguard_processes()
                    or any(monitors.values()))

    await wait_for("everything removed after close", nothing_left, 10)


async def test_heal_onto_the_replacing_remote_endpoint(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(nodes=2)
    domains = await split_domains(fabric)
    await domains.add_endpoint("b", "nse-old", ["db"])
    client = await fabric.add_client("nsc", node=1, urls=["kernel://db@b/nsm0"])
    await domains.add_endpoint("b", "nse-new", ["db"], cidrs=("10.71.0.0/16",))

    heal = await measure_heal(client, lambda: fabric.kill(
        client.connection()["network_service_endpoint_name"].removesuffix("@b")))

    print(f"cross-domain endpoint death heal: {heal.seconds * 1000:.0f} ms")
    assert heal.before["network_service_endpoint_name"] != (
        heal.after["network_service_endpoint_name"])
    assert heal.after["network_service_endpoint_name"].endswith("@b")


async def test_refresh_through_a_restarted_remote_gateway(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(nodes=2, token_lifetime=6.0)
    domains = await split_domains(fabric)
    await domains.add_endpoint("b", "nse-b", ["db"])
    client = await fabric.add_client("nsc", node=1, urls=["kernel://db@b/nsm0"],
                                     lifetime=6.0)
    fabric.kill("gateway-b")
    domains.start_gateway("b")
    await domains.wait_gateway("b")
    before = client.connection()["path"]["path_segments"][0].get("expires")

    async def refreshed_and_passing() -> bool:
        conn = client.connection()
        if conn["path"]["path_segments"][0].get("expires") == before:
            return False
        return await ping(client.netns, endpoint_address(conn))

    await wait_for("a refresh through the new gateway-b", refreshed_and_passing, 15)
    assert client.heals() == 0, "the refresh went through: nothing to heal"


async def test_a_floating_domain_leads_to_the_publishing_domain(make_fabric: MakeFabric) -> None:
    """b publishes its endpoint in floating domain f (registry and gateway only); a client in a
    asks for svc@f and reaches b's endpoint, its path never passing f; also after b's gateway
    restarted."""
    fabric = await make_fabric(nodes=2)
    domains = await split_domains(fabric, floating="f")
    await domains.add_endpoint("b", "nse-b", ["svc"])
    await domains.publish("b", "nse-b", ["svc"])
    client = await fabric.add_client("nsc", node=1, urls=["kernel://svc@f/nsm0"])
    conn = client.connection()
    assert names(conn) == [
        "nsc-n1", "nsmgr-n1", "forwarder-n1", "gateway-a", "gateway-b", "nsmgr-n2",
        "forwarder-n2", "nse-b",
    ]
    assert conn["network_service_endpoint_name"] == "nse-b@f"
    assert await ping(client.netns, endpoint_address(conn))

    # b's gateway restarts and forgets its publication; f still points requests at it, and
    # with signed paths it serves what another gateway sends it.
    fabric.kill("gateway-b")
    domains.start_gateway("b")
    await domains.wait_gateway("b")
    late = await fabric.add_client("late", node=1, urls=["kernel://svc@f/nsm0"])
    assert late.connection()["network_service_endpoint_name"] == "nse-b@f"
    assert await ping(late.netns, endpoint_address(late.connection()))


async def test_heal_after_the_remote_node_s_forwarder_restarted(make_fabric: MakeFabric) -> None:
    """The loss is announced hop by hop back through both gateways (each follows its next
    hop's monitor stream) and the client heals through the restarted forwarder."""
    fabric = await make_fabric(nodes=2)
    domains = await split_domains(fabric)
    await domains.add_endpoint("b", "nse-b", ["db"])
    client = await fabric.add_client("nsc", node=1, urls=["kernel://db@b/nsm0"])

    heal = await measure_heal(client, lambda: fabric.processes.restart("n2-forwarder"))

    print(f"cross-domain remote forwarder restart heal: {heal.seconds * 1000:.0f} ms")
    assert heal.after["network_service_endpoint_name"] == "nse-b@b"
    assert heal.after["id"] == heal.before["id"], "healing keeps the client's connection id"


async def test_domain_b_authorizes_a_s_clients_by_their_own_trust_domain(
    make_fabric: MakeFabric,
) -> None:
    """b's nsmgr enforces a policy naming a foreign client (spiffe://lab.vwire/nsc/web-*): that
    client of a gets its vWire, another client of a is refused with the policy's reason."""
    fabric = await make_fabric(nodes=2)
    policy = fabric.topology.state_dir / "policy-b.yaml"
    policy.write_text("version: 1\nrequests:\n  - rule: web-of-a\n    services: [db]\n"
                      "    clients: ['spiffe://lab.vwire/nsc/web-*']\n")
    domains = await split_domains(fabric, policies={"b": policy})
    await domains.add_endpoint("b", "nse-b", ["db"])
    web = await fabric.add_client("web", node=1, urls=["kernel://db@b/nsm0"])
    assert await ping(web.netns, endpoint_address(web.connection()))

    await fabric.add_client("intruder", node=1, urls=["kernel://db@b/nsm0"], wait=False)

    async def refused() -> bool:
        return fabric.processes.pid_of("intruder") is None

    await wait_for("the intruder's client to give up", refused, 30)
    log = fabric.processes.log("intruder").read_text()
    assert "no rule allows spiffe://lab.vwire/nsc/intruder-n1 to request 'db'" in log, log
