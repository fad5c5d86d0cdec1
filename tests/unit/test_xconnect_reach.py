"""NAT and path MTU decisions of two forwarders' ``Xconnect`` talking to each other, on the fake
kernel: which side dials (none towards a masqueraded node of another site), who keeps the NAT
open (keepalive 25 s), the same tunnel MTU on both ends from the path's underlay MTU, and a clear
refusal that leaves nothing behind when neither node can be reached."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from api.mechanisms.kernel import KernelMechanism, is_kernel
from api.mechanisms.wireguard import (
    NAT_MASQUERADE,
    NAT_NONE,
    NAT_ONE_TO_ONE,
    Reach,
    WireguardMechanism,
)
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from forwarder.kernel import FakeKernel
from forwarder.ports import PortPool
from forwarder.reach import ipv6_underlay, path_mtu
from forwarder.specs import Node
from forwarder.underlay import advertised_address
from forwarder.wireguard import WgPeer
from forwarder.wireguard.fake import FakeWireGuard
from forwarder.xconnect import Xconnect
from sdk.errors import FailedPrecondition, InvalidArgument
from sdk.networkservice.core import NetworkServiceChain, NetworkServiceElement, NSCursor
from sdk.networkservice.metadata import Metadata
from tests.unit.far_side import FarSide

CLIENT_NS, ENDPOINT_NS = "/var/run/netns/cli", "/var/run/netns/nse"


@dataclass(frozen=True)
class Site:
    node: str
    site: str
    nat: str
    underlay_ip: str
    public_ip: str
    underlay_mtu: int


class ToOtherNode(NetworkServiceElement):
    """The remote nsmgr: offers the endpoint side's forwarder only the WIREGUARD mechanism."""

    def __init__(self, chain: NetworkServiceChain) -> None:
        self.chain = chain

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        wanted = [m for m in request.mechanism_preferences if not is_kernel(m)]
        del request.mechanism_preferences[:]
        request.mechanism_preferences.extend(wanted)
        return await self.chain.run_request(request)

    async def close(self, conn: Connection, next: NSCursor) -> None:
        await self.chain.run_close(conn)


@dataclass
class Pair:
    kernel: FakeKernel
    backend: FakeWireGuard
    ports: PortPool
    chain: NetworkServiceChain
    far: FarSide

    def peer_in(self, netns: str) -> WgPeer:
        """The one WireGuard peer of the tunnel that ended up in workload namespace ``netns``."""
        found = [peer for name, peers in self.backend.peers.items()
                 for peer in peers.values() if self.backend.where[name] == netns]
        assert len(found) == 1, found
        return found[0]

    def dialled(self, netns: str) -> str | None:
        endpoint = self.peer_in(netns).endpoint
        return None if endpoint is None else endpoint[0]

    async def mtu_in(self, netns: str) -> int:
        return (await self.kernel.get_link(netns, "nsm0")).mtu


def _ns(node: Site) -> str:
    return f"/var/run/netns/{node.node}"


def _xconnect(kernel: FakeKernel, backend: FakeWireGuard, node: Site, ports: PortPool,
              wan_mtu: int = 1500) -> Xconnect:
    nat_ip = node.public_ip if node.nat == NAT_ONE_TO_ONE else ""
    return Xconnect(kernel, backend, Node(
        node.node, node.underlay_ip, "eth0", _ns(node),
        advertised_ip=advertised_address(node.nat, nat_ip, node.underlay_ip),
        reach=Reach(site=node.site, nat=node.nat, underlay_mtu=node.underlay_mtu,
                    wan_mtu=wan_mtu),
    ), ports)


def pair(client: Site, endpoint: Site) -> Pair:
    kernel = FakeKernel()
    for ns in (CLIENT_NS, ENDPOINT_NS, _ns(client), _ns(endpoint)):
        kernel.add_netns(ns)
    for node in (client, endpoint):
        kernel.add_link(_ns(node), "eth0", "veth", up=True, mtu=node.underlay_mtu)
    backend = FakeWireGuard(kernel)
    ports = PortPool(range(51820, 51830))
    far = FarSide(KernelMechanism(ENDPOINT_NS, "nsm0").to_proto(), "10.0.0.1/32", "10.0.0.2/32")
    endpoint_side = NetworkServiceChain([Metadata(), _xconnect(kernel, backend, endpoint, ports),
                                         far])
    chain = NetworkServiceChain([Metadata(), _xconnect(kernel, backend, client, ports),
                                 ToOtherNode(endpoint_side)])
    return Pair(kernel, backend, ports, chain, far)


def request(conn_id: str = "c1") -> NetworkServiceRequest:
    return NetworkServiceRequest(connection=Connection(id=conn_id), mechanism_preferences=[
        KernelMechanism(CLIENT_NS, "nsm0").to_proto()])


AWS_1 = Site("aws-1", "aws", NAT_ONE_TO_ONE, "10.1.0.11", "100.64.1.11", 9001)
AWS_2 = Site("aws-2", "aws", NAT_MASQUERADE, "10.1.0.12", "", 9001)
GCP_1 = Site("gcp-1", "gcp", NAT_ONE_TO_ONE, "10.2.0.11", "100.64.2.11", 1460)
GCP_2 = Site("gcp-2", "gcp", NAT_MASQUERADE, "10.2.0.12", "", 1460)
ONPREM = Site("onprem-1", "on-prem", NAT_NONE, "10.4.0.11", "", 1500)


async def test_masqueraded_client_dials_the_public_address_and_keeps_the_nat_open() -> None:
    p = pair(AWS_2, GCP_1)
    reply = await p.chain.run_request(request())
    assert p.dialled(CLIENT_NS) == "100.64.2.11"  # gcp-1's public address
    assert p.peer_in(CLIENT_NS).keepalive == 25
    assert p.dialled(ENDPOINT_NS) is None  # learnt from the masqueraded client's handshake
    assert p.peer_in(ENDPOINT_NS).keepalive is None
    # aws 9001, gcp 1460, internet 1500: the path carries 1460, minus 60 for IPv4
    assert reply.context.MTU == 1400
    assert await p.mtu_in(CLIENT_NS) == await p.mtu_in(ENDPOINT_NS) == 1400


async def test_masqueraded_endpoint_dials_the_client() -> None:
    p = pair(GCP_1, AWS_2)
    await p.chain.run_request(request())
    assert p.dialled(CLIENT_NS) is None and p.peer_in(CLIENT_NS).keepalive is None
    assert p.dialled(ENDPOINT_NS) == "100.64.2.11" and p.peer_in(ENDPOINT_NS).keepalive == 25


async def test_nodes_of_one_site_use_their_site_addresses_and_jumbo_mtu() -> None:
    p = pair(AWS_2, AWS_1)
    reply = await p.chain.run_request(request())
    assert (p.dialled(CLIENT_NS), p.dialled(ENDPOINT_NS)) == ("10.1.0.11", "10.1.0.12")
    assert p.peer_in(CLIENT_NS).keepalive is None and p.peer_in(ENDPOINT_NS).keepalive is None
    assert reply.context.MTU == 9001 - 60
    assert await p.mtu_in(CLIENT_NS) == await p.mtu_in(ENDPOINT_NS) == 8941


async def test_gcp_to_gcp_and_on_prem_mtus() -> None:
    p = pair(GCP_1, GCP_2)
    assert (await p.chain.run_request(request())).context.MTU == 1400
    q = pair(ONPREM, AWS_1)
    assert (await q.chain.run_request(request())).context.MTU == 1440
    assert (q.dialled(CLIENT_NS), q.dialled(ENDPOINT_NS)) == ("100.64.1.11", "10.4.0.11")


async def test_both_behind_masquerade_fail_naming_both_and_leave_nothing() -> None:
    p = pair(AWS_2, GCP_2)
    before = p.kernel.snapshot()
    with pytest.raises(FailedPrecondition) as failure:
        await p.chain.run_request(request())
    message = str(failure.value)
    assert "aws-2 in site 'aws'" in message and "gcp-2 in site 'gcp'" in message
    assert "masquerading NAT" in message and "--external-address" in message
    assert p.far.closes == 0  # refused before the endpoint was asked
    assert p.ports._by_owner == {}
    assert p.kernel.snapshot() == before


async def test_a_peer_that_says_nothing_about_its_reach_is_dialled_as_before() -> None:
    """An NSM forwarder sends none of the vwire_* keys: default site, no NAT, MTU unknown."""
    me = Reach(site="", underlay_mtu=9001, wan_mtu=1500)
    assert path_mtu(me, Reach()) == 9001
    assert path_mtu(Reach(site="aws", underlay_mtu=9001, wan_mtu=1500), Reach()) == 1500


def test_reach_round_trips_and_refuses_unknown_nat() -> None:
    reach = Reach("aws-1", "aws", "10.1.0.11", NAT_ONE_TO_ONE, 9001, 1500)
    mech = WireguardMechanism(src_ip="100.64.1.11", src_port=51820, src=reach).to_proto()
    assert WireguardMechanism.parse(mech).src == reach
    assert "vwire_src_nat" in mech.parameters and "src_ip" in mech.parameters
    mech.parameters["vwire_src_nat"] = "carrier-grade"
    with pytest.raises(InvalidArgument) as failure:
        WireguardMechanism.parse(mech, "mechanism_preferences[WIREGUARD]")
    assert failure.value.field == "mechanism_preferences[WIREGUARD].parameters[vwire_src_nat]"
    mech.parameters["vwire_src_nat"] = "none"
    mech.parameters["vwire_src_underlay_mtu"] = "9k"
    with pytest.raises(InvalidArgument, match=r"vwire_src_underlay_mtu"):
        WireguardMechanism.parse(mech)
    mech.parameters["vwire_src_underlay_mtu"] = "9001"
    mech.parameters["vwire_dst_site_ip"] = "10.0.0.1:51820"
    with pytest.raises(InvalidArgument, match=r"parameters\[vwire_dst_site_ip\]: must be an IP"):
        WireguardMechanism.parse(mech)
    mech.parameters["vwire_dst_site_ip"] = "10.0.0.1"
    mech.parameters["vwire_dst_site"] = "aws\n-eu"
    with pytest.raises(InvalidArgument, match=r"vwire_dst_site\]: must be at most 253 printable"):
        WireguardMechanism.parse(mech)


@pytest.mark.parametrize(("nat", "external", "fix"), [
    (NAT_ONE_TO_ONE, "", "--external-address"),
    (NAT_ONE_TO_ONE, "not-an-ip", "not an IP address"),
    (NAT_MASQUERADE, "100.64.1.11", "VWIRE_FORWARDER_NAT=one-to-one"),
])
def test_advertised_address_settings_are_checked(nat: str, external: str, fix: str) -> None:
    with pytest.raises(InvalidArgument) as failure:
        advertised_address(nat, external, "10.1.0.11")
    assert failure.value.field == "external_address" and fix in str(failure.value)


async def test_an_ipv6_underlay_costs_80_bytes_on_both_ends_even_when_one_cannot_dial() -> None:
    """The masqueraded side's peer has no endpoint on the far side; both ends still agree on the
    IPv6 overhead (from the advertised addresses), not on "unknown: assume IPv6" by luck."""
    near = Site("v6-1", "aws", NAT_MASQUERADE, "fd00:1::11", "", 9001)
    far = Site("v6-2", "gcp", NAT_ONE_TO_ONE, "fd00:2::11", "2001:db8::11", 1460)
    p = pair(near, far)
    reply = await p.chain.run_request(request())
    assert p.dialled(CLIENT_NS) == "2001:db8::11" and p.dialled(ENDPOINT_NS) is None
    assert reply.context.MTU == 1460 - 80
    assert await p.mtu_in(CLIENT_NS) == await p.mtu_in(ENDPOINT_NS) == 1380


def test_the_underlay_family_comes_from_the_first_address_known() -> None:
    assert ipv6_underlay("", "192.0.2.1", "fd00::1") is False
    assert ipv6_underlay("fd00::1", "192.0.2.1") is True
    assert ipv6_underlay("", "") is True  # unknown: the larger overhead, the safe MTU
