"""A local (veth) and a remote (WireGuard) connection pass ICMP (v4, v6) and TCP (v4, v6)."""

from __future__ import annotations

import asyncio
import socket

from lab import network
from lab.fabric import Client, Endpoint
from lab.observe import client_address, endpoint_address, ping, wait_for
from lab.topology import netns_path
from sdk.netns import socket_in
from tests.e2e.conftest import MakeFabric

LOCAL_CIDRS = ("10.61.0.0/16", "fd00:61::/64")
REMOTE_CIDRS = ("10.62.0.0/16", "fd00:62::/64")
PAYLOAD = bytes(range(256)) * 400  # 100 KiB: many segments, larger than the MTU


async def tcp_exchange(client: Client, endpoint: Endpoint, server_ip: str, client_ip: str) -> bytes:
    """Connect from the client's namespace to a server in the endpoint's namespace; the server
    reads the payload and sends back its reverse. Returns what the client received."""
    family = socket.AF_INET6 if ":" in server_ip else socket.AF_INET
    loop = asyncio.get_running_loop()
    server = await socket_in(netns_path(endpoint.netns), lambda: socket.socket(family))
    conn = await socket_in(netns_path(client.netns), lambda: socket.socket(family))
    for sock in (server, conn):
        sock.setblocking(False)
    try:
        server.bind((server_ip, 0))
        server.listen(1)
        port = server.getsockname()[1]

        async def serve() -> None:
            peer, _ = await loop.sock_accept(server)
            with peer:
                received = b""
                while len(received) < len(PAYLOAD):
                    chunk = await loop.sock_recv(peer, 65536)
                    if not chunk:
                        break
                    received += chunk
                await loop.sock_sendall(peer, received[::-1])

        async def talk() -> bytes:
            await loop.sock_connect(conn, (server_ip, port))
            assert conn.getsockname()[0] == client_ip, "the TCP flow must use the vWire"
            await loop.sock_sendall(conn, PAYLOAD)
            answer = b""
            while len(answer) < len(PAYLOAD):
                chunk = await loop.sock_recv(conn, 65536)
                if not chunk:
                    break
                answer += chunk
            return answer

        async with asyncio.timeout(15):
            _, answer = await asyncio.gather(serve(), talk())
        return answer
    finally:
        server.close()
        conn.close()


async def test_local_and_remote_connections_pass_icmp_and_tcp(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(nodes=2)
    local = await fabric.add_endpoint("nse-local", ["local-svc"], node=1, cidrs=LOCAL_CIDRS)
    remote = await fabric.add_endpoint("nse-remote", ["remote-svc"], node=2, cidrs=REMOTE_CIDRS)
    client = await fabric.add_client(
        "nsc", node=1, urls=["kernel://local-svc/nsm0", "kernel://remote-svc/nsm1"]
    )
    links = {
        "nsm0": network.ip("-d", "link", "show", "nsm0", netns=client.netns),
        "nsm1": network.ip("-d", "link", "show", "nsm1", netns=client.netns),
    }
    assert "veth" in links["nsm0"], f"the local vWire must be a veth: {links['nsm0']}"
    assert "tun" in links["nsm1"], f"the remote vWire must be wireguard-go's TUN: {links['nsm1']}"
    assert fabric.wireguard_processes(), "a remote vWire runs wireguard-go"

    for service, endpoint in (("local-svc", local), ("remote-svc", remote)):
        conn = client.connection(service)
        assert conn.get("network_service_endpoint_name") == endpoint.name
        for version in (4, 6):
            target = endpoint_address(conn, version)
            assert target, f"{service}: no IPv{version} endpoint address in {conn['context']}"

            async def answers(address: str = target) -> bool:
                return await ping(client.netns, address, wait=0.5)

            await wait_for(f"{service}: ping {target}", answers, 10)  # IPv6: DAD may delay it
            answer = await tcp_exchange(client, endpoint, target, client_address(conn, version))
            assert answer == PAYLOAD[::-1], f"{service}: TCP over IPv{version}"
