"""A remote vWire side over a shared device: a veth into the workload, policy routing in the
shared namespace (:mod:`forwarder.shared.devices`).

Contract of :func:`program_shared`:

* validates the whole spec first (namespace, interface name, addresses, routes, the peer's
  addresses and routes, its key; the underlay's MTU is read): nothing is made on rejected input,
  ``InvalidArgument``/``NotFound`` name the field;
* MTU as for a device per vWire (:mod:`forwarder.vwire.remote`), capped by the shared device's
  own (made at the path MTU by its first connection);
* puts the connection in an address space (``spec.space``, the far side's choice, or the
  lowest that fits) and runs that space's device with the connection's far prefixes among its
  peer's allowed IPs;
* one veth pair: ``vs…`` in the shared namespace, the workload's interface (``workload.ifname``,
  generated when absent) in its namespace, both at the MTU and marked; the workload's end gets
  its addresses and a route to every far prefix through a link-local next hop (169.254.0.1 /
  fe80::1) whose static neighbour entry is the node end's MAC;
* the connection's own routing table in the shared namespace: far prefixes → the device, the
  workload's addresses → its veth (static neighbours), what the far side routes to this side →
  via the workload; and rules into it: from the workload's veth only with its own addresses
  (or what the far side routes here) as source, from the device only with a far prefix as
  source and a near one as destination. Nothing else is routed: a workload reaches only its own
  connection's far side, never the node, another workload or another connection, and a spoofed
  source is dropped;
* any failure undoes what was done (rules, routes, veth, the place in the device; the last
  connection out stops the device) and re-raises; ``VWire.close`` does the same later.

``VWire.metrics`` adds ``wireguard_device`` (``shared``), ``wireguard_space`` and
``wireguard_last_handshake_age_seconds`` of the shared peer, from a reading of the device's
statistics that its vWires share for a second (:meth:`SharedDevices.peer_stats`; the device's
byte counters are the node pair's, not the connection's: the veth's are reported as for every
vWire).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from ipaddress import ip_address, ip_network

from forwarder.kernel import Entry, KernelPort, Neighbour, Route, Rule
from forwarder.vwire import resolve, validate
from forwarder.vwire.attach import AnyInterface, EndPlan, apply_end, parse_addresses, plan_end
from forwarder.vwire.handle import End, VWire, program_or_rollback
from forwarder.vwire.mtu import wireguard_mtu
from forwarder.vwire.naming import generated_ifname, generated_mac, marker
from forwarder.vwire.remote import metrics_of_peer
from forwarder.vwire.spec import Attachment
from forwarder.wireguard import WgPeer
from forwarder.wireguard.model import validate_peer
from sdk.errors import NotFound

from .devices import SharedDevices
from .spaces import AnyNetwork, Selectors

ROLE = "workload"
NODE_END_PREFIX = "vs"  # the veth's end in the shared namespace
RULE_PRIORITY = 100
GATEWAY = {4: "169.254.0.1", 6: "fe80::1"}


@dataclass(frozen=True)
class SharedPeerSpec:
    """The other node's side: its node key, the endpoint to dial (None: it dials us), the other
    workload's addresses and what the other side routes into the vWire."""

    public_key: str
    endpoint: tuple[str, int] | None
    addresses: tuple[str, ...]
    routes: tuple[str, ...] = ()
    keepalive: int | None = None


@dataclass(frozen=True)
class SharedVWireSpec:
    """This node's side of a vWire over a shared device (fields as in
    :class:`forwarder.vwire.RemoteVWireSpec`; ``space`` None: choose one)."""

    connection_id: str
    workload: Attachment
    peer: SharedPeerSpec
    underlay_ifname: str
    underlay_netns: str | None = None
    space: int | None = None
    mtu: int | None = None
    path_mtu: int | None = None
    ipv6_underlay: bool | None = None


@dataclass(frozen=True)
class _Checked:
    cid: str
    workload_ns: str
    ifname: str
    plan: EndPlan
    own: list[AnyInterface]
    peer_routes: tuple[AnyNetwork, ...]
    selectors: Selectors
    device_mtu: int
    mtu: int


async def _check(kernel: KernelPort, spec: SharedVWireSpec) -> _Checked:
    cid = validate.connection_id(spec.connection_id)
    workload_ns = await resolve.namespace(kernel, spec.workload.netns, "workload.netns")
    underlay_ns = (None if spec.underlay_netns is None
                   else await resolve.namespace(kernel, spec.underlay_netns, "underlay_netns"))
    try:
        underlay_mtu = await kernel.link_mtu(
            underlay_ns, validate.ifname(spec.underlay_ifname, "underlay_ifname"))
    except NotFound as err:
        raise NotFound(f"underlay_ifname: {err}") from None
    ifname = (validate.ifname(spec.workload.ifname, f"{ROLE}.ifname") if spec.workload.ifname
              else generated_ifname(cid, ROLE))
    own = parse_addresses(spec.workload, ROLE)
    far_addrs = [validate.interface_cidr(a, f"peer.addresses[{i}]")
                 for i, a in enumerate(spec.peer.addresses)]
    peer_routes = tuple(ip_network(validate.prefix(p, f"peer.routes[{i}]"))
                        for i, p in enumerate(spec.peer.routes))
    plan = plan_end(ROLE, spec.workload, workload_ns, ifname, far_addrs, point_to_point=True)
    validate_peer(WgPeer(public_key=spec.peer.public_key, endpoint=spec.peer.endpoint,
                         allowed_ips=(), keepalive=spec.peer.keepalive))
    near = tuple(dict.fromkeys([ip_network(a.ip) for a in own] + list(peer_routes)))
    far = tuple(dict.fromkeys([ip_network(a.ip) for a in far_addrs]
                              + [ip_network(r.dst) for r in plan.routes]))
    ipv6_underlay = spec.ipv6_underlay
    if ipv6_underlay is None:
        ipv6_underlay = (spec.peer.endpoint is None
                         or ip_address(spec.peer.endpoint[0]).version == 6)
    ipv6 = any(a.version == 6 for a in own + far_addrs)
    underlay = min(underlay_mtu, spec.path_mtu or underlay_mtu)
    device_mtu = wireguard_mtu(underlay, ipv6_underlay=ipv6_underlay, requested=None, ipv6=ipv6)
    mtu = wireguard_mtu(underlay, ipv6_underlay=ipv6_underlay, requested=spec.mtu, ipv6=ipv6)
    return _Checked(cid, workload_ns, ifname, plan, own, peer_routes, Selectors(near, far),
                    device_mtu, mtu)


def _workload_plan(checked: _Checked, node_mac: str) -> EndPlan:
    """The workload end's plan with every far prefix through the link-local next hop, whose
    neighbour entry is the node end's MAC (``node_mac``)."""
    plan = checked.plan
    routes = tuple(
        Route(dst=r.dst, dev=plan.ifname, gateway=GATEWAY[ip_network(r.dst).version],
              onlink=True)
        for r in plan.routes
    )
    families = sorted({ip_network(r.dst).version for r in plan.routes})
    gateways = tuple(Neighbour(plan.ifname, GATEWAY[version], node_mac) for version in families)
    return EndPlan(plan.role, plan.netns, plan.ifname, plan.addresses, routes,
                   plan.neighbours + gateways)


async def program_shared(
    kernel: KernelPort, devices: SharedDevices, spec: SharedVWireSpec,
    on_lost: Callable[[VWire], None] | None = None,
) -> VWire:
    """Program this node's side of a shared-device vWire (module docstring); ``on_lost`` is
    called with it if its device's daemon cannot be brought back."""
    checked = await _check(kernel, spec)
    cid, peer = checked.cid, spec.peer
    vwire = VWire(kernel, cid, checked.mtu, (End(ROLE, checked.workload_ns, checked.ifname),))
    lost = None if on_lost is None else (lambda: on_lost(vwire))
    space = devices.reserve(peer.public_key, spec.space, cid, checked.selectors, lost)
    node_end = generated_ifname(cid, "shared", NODE_END_PREFIX)
    shared_ns = devices.netns
    table = devices.table(cid)
    mtu = checked.mtu

    async def metrics() -> dict[str, str]:
        return await _metrics(devices, peer.public_key, space)

    vwire.extra_metrics = metrics
    vwire.space = space

    async def release() -> None:
        devices.free_table(cid)
        await devices.leave(peer.public_key, space, cid)

    vwire.undo.push(f"leave shared device space {space}", release)

    async def steps() -> None:
        device = await devices.join(peer.public_key, space, cid, peer.endpoint, peer.keepalive,
                                    checked.device_mtu)
        vwire.mtu = min(mtu, device.mtu)
        vwire.listen_port = device.port
        await kernel.create_veth(node_end, shared_ns, checked.ifname, checked.workload_ns)
        vwire.undo.push(f"delete {node_end}", lambda: kernel.delete_link(shared_ns, node_end))
        # MACs of our choosing: each end's static neighbour entry names the other's
        node_mac, workload_mac = generated_mac(cid, "shared"), generated_mac(cid, ROLE)
        await kernel.set_link(shared_ns, node_end, mtu=vwire.mtu, alias=marker(cid), up=True,
                              mac=node_mac)
        await apply_end(kernel, _workload_plan(checked, node_mac), mtu=vwire.mtu,
                        alias=marker(cid), mac=workload_mac)
        await _node_side(kernel, devices, vwire, checked, node_end, device.wg_name, table,
                         workload_mac)
        devices.add_routes(peer.public_key, space, cid, (
            Route(dst=str(f), dev=device.wg_name, table=table) for f in checked.selectors.far))

    return await program_or_rollback(vwire, steps)


async def _node_side(
    kernel: KernelPort, devices: SharedDevices, vwire: VWire, checked: _Checked, node_end: str,
    wg_name: str, table: int, workload_mac: str,
) -> None:
    """Neighbours, routes and rules of the connection's table in the shared namespace (module
    docstring), added in one kernel call; what outlives the node end's veth (the routes through
    the device, the rules) is removed by an undo on ``vwire.undo``, pushed first (it skips what
    is not there), so it also covers an add whose own rollback failed."""
    ns = devices.netns
    entries: list[Entry] = []
    for address in checked.own:
        entries.append(Neighbour(node_end, str(address.ip), workload_mac))
        entries.append(Route(dst=str(ip_network(address.ip)), dev=node_end, table=table))
    hosts = {ip_network(a.ip) for a in checked.own}
    for prefix in checked.peer_routes:
        via = next((a for a in checked.own if a.version == prefix.version), None)
        if via is not None and prefix not in hosts:
            entries.append(Route(dst=str(prefix), dev=node_end, gateway=str(via.ip),
                                 table=table, onlink=True))
    lasting: list[Entry] = [Route(dst=str(far), dev=wg_name, table=table)
                            for far in checked.selectors.far]
    lasting += [Rule(RULE_PRIORITY, table, _family(n), src=str(n), iif=node_end)
                for n in checked.selectors.near]
    lasting += [Rule(RULE_PRIORITY, table, _family(n), src=str(f), dst=str(n), iif=wg_name)
                for f in checked.selectors.far for n in checked.selectors.near
                if f.version == n.version]
    vwire.undo.push(f"delete the routes through {wg_name} and the rules of table {table}",
                    partial(kernel.delete_all, ns, lasting))
    await kernel.add_all(ns, entries + lasting)


def _family(network: AnyNetwork) -> int:
    return socket.AF_INET if network.version == 4 else socket.AF_INET6


async def _metrics(devices: SharedDevices, peer_key: str, space: int) -> dict[str, str]:
    result = {"wireguard_device": "shared", "wireguard_space": str(space),
              "wireguard_last_handshake_age_seconds": "never"}
    device = next((d for d in devices.devices()
                   if d.peer_key == peer_key and d.space == space and d.running), None)
    if device is None:
        return result
    # the device's byte counters are the node pair's, not this connection's: only the handshake
    found = metrics_of_peer(await devices.peer_stats(device), peer_key)
    result["wireguard_last_handshake_age_seconds"] = found["wireguard_last_handshake_age_seconds"]
    return result
