"""Remote vWire side: a WireGuard interface between nodes, moved into the workload's namespace.

The "namespace trick" (verified with wireguard-go's TUN on this machine): the WireGuard
interface is created in the node's underlay namespace, where its UDP socket is bound and stays,
then the interface itself is moved into the workload's namespace. Plaintext exists only inside
the workload's namespace; the underlay only ever sees WireGuard UDP. No policy routing needed.

Contract of :func:`program_remote`:

* validates everything first, including the peer (key, endpoint, allowed IPs) and the private
  key, resolves the namespaces and reads the underlay interface's MTU; nothing is created on
  rejected input (``InvalidArgument``/``NotFound`` naming the field);
* MTU = the smaller of the underlay interface's MTU and ``spec.path_mtu`` (the path's), minus 60
  (IPv4 underlay) or 80 (IPv6 underlay; by ``spec.ipv6_underlay``, else the peer endpoint's
  family, IPv6 when there is none), capped by ``spec.mtu``; set while the interface is still in
  the underlay (so wireguard-go sees it) and returned as ``VWire.mtu``;
* creates the interface under a generated, globally unique name (wireguard-go's control socket
  name), configures the peer (allowed IPs = the other side's addresses as host prefixes plus this
  side's route prefixes), marks it ``vwire:<id> wg=<name>``, moves it into the workload's
  namespace and renames it to ``workload.ifname`` (when given), then adds addresses, brings it up
  and installs routes (straight onto the point-to-point device; see
  :mod:`forwarder.vwire.attach`); neighbours are ignored (no link layer);
* any failure undoes what was done (backend interface first, then any link left in the
  workload's namespace) and re-raises; ``VWire.close`` does the same later, idempotently.

``VWire.metrics`` adds ``wireguard_rx_bytes``, ``wireguard_tx_bytes``,
``wireguard_last_handshake_age_seconds`` (``never`` before the first handshake) and, on the side
that dials, ``wireguard_endpoint`` (the peer's ``ip:port``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from ipaddress import ip_address, ip_network

from forwarder.kernel import KernelPort, Route
from forwarder.wireguard import WgPeer, WireGuardBackend
from forwarder.wireguard.keys import parse_private_key
from forwarder.wireguard.model import validate_peer, validate_port
from forwarder.wireguard.uapi import format_endpoint
from sdk.errors import NotFound

from . import resolve, validate
from .attach import AnyInterface, apply_end, parse_addresses, plan_end
from .handle import End, VWire, program_or_rollback
from .mtu import wireguard_mtu
from .naming import generated_ifname, marker
from .spec import Attachment, RemoteVWireSpec

ROLE = "workload"


async def program_remote(
    kernel: KernelPort, backend: WireGuardBackend, spec: RemoteVWireSpec
) -> VWire:
    """Program this node's side of a remote vWire (see module docstring); return its handle."""
    cid = validate.connection_id(spec.connection_id)
    workload_ns = await resolve.namespace(kernel, spec.workload.netns, "workload.netns")
    underlay_ns = (
        None
        if spec.underlay_netns is None
        else await resolve.namespace(kernel, spec.underlay_netns, "underlay_netns")
    )
    underlay_if = validate.ifname(spec.underlay_ifname, "underlay_ifname")
    try:
        underlay_mtu = await kernel.link_mtu(underlay_ns, underlay_if)
    except NotFound as err:
        raise NotFound(f"underlay_ifname: {err}") from None
    private_key = parse_private_key(spec.private_key, "private_key").reveal()
    listen_port = validate_port(spec.listen_port, "listen_port", allow_zero=True)
    wg_name = generated_ifname(cid, f"wireguard:{workload_ns}")
    final_name = _final_name(spec.workload, wg_name)
    own = parse_addresses(spec.workload, ROLE)
    peer_addrs = [
        validate.interface_cidr(a, f"peer.addresses[{i}]")
        for i, a in enumerate(spec.peer.addresses)
    ]
    plan = plan_end(ROLE, spec.workload, workload_ns, final_name, peer_addrs, point_to_point=True)
    peer = validate_peer(
        WgPeer(
            public_key=spec.peer.public_key,
            endpoint=spec.peer.endpoint,
            allowed_ips=_allowed_ips(peer_addrs, plan.routes),
            keepalive=spec.peer.keepalive,
        )
    )
    ipv6_underlay = spec.ipv6_underlay
    if ipv6_underlay is None:
        ipv6_underlay = peer.endpoint is None or ip_address(peer.endpoint[0]).version == 6
    mtu = wireguard_mtu(
        min(underlay_mtu, spec.path_mtu or underlay_mtu),
        ipv6_underlay=ipv6_underlay,
        requested=spec.mtu,
        ipv6=any(a.version == 6 for a in own + peer_addrs),
    )

    async def wireguard_metrics() -> dict[str, str]:
        metrics = await _wireguard_metrics(backend, wg_name, peer.public_key)
        if peer.endpoint is not None:
            metrics["wireguard_endpoint"] = format_endpoint(*peer.endpoint)
        return metrics

    vwire = VWire(
        kernel, cid, mtu, (End(ROLE, workload_ns, final_name),), extra_metrics=wireguard_metrics
    )
    vwire.wireguard = (wg_name, peer)
    where = {"netns": underlay_ns, "name": wg_name}

    async def delete_moved_link() -> None:
        # Only for a kernel WireGuard link, which outlives the backend's delete once moved.
        if where["netns"] == workload_ns:
            await kernel.delete_link(workload_ns, str(where["name"]))

    async def steps() -> None:
        vwire.undo.push(f"delete {final_name} in {workload_ns}", delete_moved_link)
        vwire.listen_port = await backend.create(
            wg_name, underlay_ns, private_key, listen_port, mtu=mtu
        )
        vwire.undo.push(f"delete wireguard {wg_name}", lambda: backend.delete(wg_name))
        await backend.set_peer(wg_name, peer)
        await kernel.set_link(underlay_ns, wg_name, mtu=mtu, alias=marker(cid, wg_name))
        await backend.move(wg_name, underlay_ns, workload_ns)
        where["netns"] = workload_ns
        if final_name != wg_name:
            await kernel.set_link(workload_ns, wg_name, new_name=final_name)
            where["name"] = final_name
        # MTU and alias were set in the underlay and moved with the link
        await apply_end(kernel, plan, mtu=mtu, alias=marker(cid, wg_name), configured=True)

    return await program_or_rollback(vwire, steps)


def _final_name(att: Attachment, wg_name: str) -> str:
    if att.ifname is None or att.ifname == "":
        return wg_name
    return validate.ifname(att.ifname, f"{ROLE}.ifname")


def _allowed_ips(peer_addrs: Sequence[AnyInterface], routes: Sequence[Route]) -> tuple[str, ...]:
    """The other side's addresses (host prefixes) and every prefix this side routes to it."""
    prefixes = [str(ip_network(a.ip)) for a in peer_addrs]
    prefixes += [route.dst for route in routes]
    return tuple(dict.fromkeys(prefixes))


async def _wireguard_metrics(
    backend: WireGuardBackend, wg_name: str, public_key: str
) -> dict[str, str]:
    for stats in await backend.stats(wg_name):
        if stats.public_key == public_key:
            age = "never"
            if stats.last_handshake is not None:
                age = f"{max(0.0, time.time() - stats.last_handshake):.0f}"
            return {
                "wireguard_rx_bytes": str(stats.rx_bytes),
                "wireguard_tx_bytes": str(stats.tx_bytes),
                "wireguard_last_handshake_age_seconds": age,
            }
    return {"wireguard_last_handshake_age_seconds": "never"}
