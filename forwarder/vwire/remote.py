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
  namespace, renames it to ``workload.ifname`` (when given) as it brings it up, then adds
  addresses and installs routes (straight onto the point-to-point device; see
  :mod:`forwarder.vwire.attach`); neighbours are ignored (no link layer);
* any failure undoes what was done (backend interface first, then any link left in the
  workload's namespace) and re-raises; ``VWire.close`` does the same later, idempotently, except
  that a side prepared with ``ready_in_workload`` and programmed whole hands its interface to
  ``backend.retire`` instead (the backend may keep it, wiped, for the next vWire of that
  namespace); its counters then carry on, so the next vWire's ``VWire.metrics`` count from
  ``backend.baseline``.

A backend that makes the interface in the workload's namespace itself (``tun_in_netns``: a
wireguard-go handed a TUN made there, its UDP socket still in the underlay) is asked to, and
nothing moves; its same-named shadow in the underlay (see :mod:`forwarder.wireguard.userspace`)
carries the connection's marker too, so a sweep after a crash removes it with the rest.

Preparing ahead (:func:`prepare_remote`): the part of the programming that needs neither the
peer nor the addresses — the backend interface with its key and port, its MTU and marker set
in the underlay (and seen by wireguard-go), moved into the workload's namespace when that is
known — can run while the request is still on its way to the far side. :func:`program_remote`
given such a :class:`PreparedRemote` takes it over: when it was prepared for what ``spec``
asks (same connection, namespaces, key, port and computed MTU; a preparation not yet moved fits
any workload namespace) only the peer, the move if not done, the rename, addresses, link up
and routes remain; otherwise it is removed and the side programmed as without it. Either way
``program_remote`` owns it: every failure (rejected input included) removes it too, and
:meth:`PreparedRemote.discard` removes one that is not used (idempotent).

``VWire.metrics`` adds ``wireguard_rx_bytes``, ``wireguard_tx_bytes``,
``wireguard_last_handshake_age_seconds`` (``never`` before the first handshake) and, on the side
that dials, ``wireguard_endpoint`` (the peer's ``ip:port``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import ip_address, ip_network

import structlog

from forwarder.kernel import KernelPort, Route
from forwarder.wireguard import WgPeer, WgPeerStats, WireGuardBackend
from forwarder.wireguard.keys import parse_private_key
from forwarder.wireguard.model import validate_peer, validate_port
from forwarder.wireguard.uapi import format_endpoint
from sdk.errors import DataplaneError, NotFound

from . import resolve, validate
from .attach import AnyInterface, EndPlan, apply_end, parse_addresses, plan_end
from .handle import End, VWire, program_or_rollback
from .mtu import check_mtu, wireguard_mtu
from .naming import generated_ifname, marker
from .spec import Attachment, RemoteVWireSpec
from .undo import UndoLog

ROLE = "workload"
log = structlog.get_logger("forwarder.vwire")


@dataclass(frozen=True)
class RemotePreparation:
    """What :func:`prepare_remote` needs: everything of a :class:`RemoteVWireSpec` that is known
    before the far side answers, and the tunnel MTU expected (``workload_netns`` None: not known
    yet, the interface stays in the underlay)."""

    connection_id: str
    private_key: str
    underlay_ifname: str
    mtu: int
    underlay_netns: str | None = None
    listen_port: int = 0
    workload_netns: str | None = None
    #: ask the backend for an interface already in the workload's namespace (a pool of them,
    #: or one a closed vWire left there: worth it where the preparation is on the request's
    #: path, i.e. the endpoint side), and leave it to the backend to keep at close
    #: (``WireGuardBackend.retire``)
    ready_in_workload: bool = False


class PreparedRemote:
    """A backend interface made ahead by :func:`prepare_remote` (see the module docstring)."""

    def __init__(
        self, connection_id: str, wg_name: str, underlay_ns: str | None, workload_ns: str | None,
        private_key: str, listen_port: int, mtu: int, keep: bool = False,
    ) -> None:
        self.connection_id = connection_id
        self.wg_name = wg_name
        self.underlay_ns = underlay_ns
        self.workload_ns = workload_ns  # where it was moved (None: still in the underlay)
        self.private_key = private_key
        self.listen_port = listen_port  # as asked (0: the data plane picked actual_port)
        self.mtu = mtu
        self.actual_port = 0
        self.keep = keep  # once programmed, its close retires the interface (backend.retire)
        self.programmed = False
        self.undo = UndoLog()
        self.where: dict[str, str | None] = {"netns": underlay_ns, "name": wg_name}

    def fits(self, checked: _Checked) -> bool:
        """Whether this preparation is what ``checked`` asks for."""
        return (
            self.connection_id == checked.cid and self.underlay_ns == checked.underlay_ns
            and self.private_key == checked.private_key
            and self.listen_port == checked.listen_port and self.mtu == checked.mtu
            and self.workload_ns in (None, checked.workload_ns)
        )

    async def discard(self) -> None:
        """Remove the interface (and daemon) again; idempotent."""
        await self.undo.unwind()


@dataclass(frozen=True)
class _Checked:
    """A spec validated, its namespaces resolved and its MTU computed (nothing created); its
    plan and peer for the interface under the name it gets when made for ``workload_ns``."""

    cid: str
    workload_ns: str
    underlay_ns: str | None
    private_key: str
    listen_port: int
    mtu: int
    peer_addrs: list[AnyInterface]
    plan: EndPlan
    peer: WgPeer


async def prepare_remote(
    kernel: KernelPort, backend: WireGuardBackend, prep: RemotePreparation
) -> PreparedRemote:
    """Make the interface of ``prep`` ahead of its spec (module docstring); all or nothing."""
    cid = validate.connection_id(prep.connection_id)
    underlay_ns = await _underlay_ns(kernel, prep.underlay_netns)
    validate.ifname(prep.underlay_ifname, "underlay_ifname")
    parse_private_key(prep.private_key, "private_key")
    listen_port = validate_port(prep.listen_port, "listen_port", allow_zero=True)
    check_mtu(prep.mtu, ipv6=False)
    workload_ns = (
        None if prep.workload_netns is None
        else await resolve.namespace(kernel, prep.workload_netns, "workload.netns")
    )
    wg_name = generated_ifname(cid, f"wireguard:{workload_ns or underlay_ns}")
    prepared = PreparedRemote(cid, wg_name, underlay_ns, None, prep.private_key, listen_port,
                              prep.mtu, keep=prep.ready_in_workload)
    try:
        await _make(kernel, backend, prepared, workload_ns, prep.ready_in_workload)
    except BaseException as err:
        try:
            await prepared.discard()
        except Exception as cleanup:
            err.add_note(f"rollback incomplete: {cleanup}")
        raise
    return prepared


async def _make(
    kernel: KernelPort, backend: WireGuardBackend, prepared: PreparedRemote,
    workload_ns: str | None, ready_in_workload: bool,
) -> None:
    """The steps of :func:`prepare_remote`; each pushes its undo on ``prepared.undo``."""
    where, wg_name, underlay_ns = prepared.where, prepared.wg_name, prepared.underlay_ns

    async def delete_moved_link() -> None:
        # Only for a kernel WireGuard link, which outlives the backend's delete once moved.
        if where["netns"] not in (None, underlay_ns):
            try:
                await kernel.delete_link(where["netns"], str(where["name"]))
            except NotFound:  # a rename that did not happen: it kept its creation name
                if where["name"] == wg_name:
                    raise
                await kernel.delete_link(where["netns"], wg_name)

    prepared.undo.push(f"delete moved {wg_name}", delete_moved_link)
    hint = workload_ns if ready_in_workload or backend.tun_in_netns else None
    mark = marker(prepared.connection_id, wg_name)
    prepared.actual_port = await backend.create(
        wg_name, underlay_ns, parse_private_key(prepared.private_key).reveal(),
        prepared.listen_port, mtu=prepared.mtu, netns=hint, alias=mark,
    )

    async def delete_or_retire() -> None:
        netns = where["netns"]
        if prepared.programmed and prepared.keep and netns not in (None, underlay_ns):
            assert netns is not None
            await backend.retire(wg_name, netns, str(where["name"]))
            where["netns"] = None  # not deleted: no longer ours, whatever it is called
        else:
            await backend.delete(wg_name)
            if backend.kind != "kernel":  # its TUN ended with its daemon: nothing to look for
                where["netns"] = None

    prepared.undo.push(f"delete wireguard {wg_name}", delete_or_retire)
    if hint is not None and await _made_in(kernel, hint, wg_name, prepared.mtu):
        prepared.where["netns"] = prepared.workload_ns = hint  # marked by the backend
        return
    await kernel.set_link(underlay_ns, wg_name, mtu=prepared.mtu, alias=mark)
    if workload_ns is not None:
        await _move(backend, prepared, workload_ns)


async def _made_in(kernel: KernelPort, netns: str, name: str, mtu: int) -> bool:
    """Whether the backend made ``name`` in ``netns`` already (at ``mtu``, else an error)."""
    try:
        found = await kernel.link_mtu(netns, name)
    except NotFound:
        return False
    if found != mtu:
        raise DataplaneError(f"{name} was made in {netns} with MTU {found}, not {mtu}")
    return True


async def _move(backend: WireGuardBackend, prepared: PreparedRemote, workload_ns: str) -> None:
    await backend.move(prepared.wg_name, prepared.underlay_ns, workload_ns)
    prepared.where["netns"] = prepared.workload_ns = workload_ns


async def program_remote(
    kernel: KernelPort, backend: WireGuardBackend, spec: RemoteVWireSpec,
    prepared: PreparedRemote | None = None,
) -> VWire:
    """Program this node's side of a remote vWire (see module docstring), taking over
    ``prepared`` if given; return its handle."""
    try:
        checked = await _check(kernel, spec)
    except BaseException:
        if prepared is not None:
            await prepared.discard()
        raise
    if prepared is not None and not prepared.fits(checked):
        log.info("vwire_preparation_unfit", connection_id=checked.cid, mtu=checked.mtu,
                 prepared_mtu=prepared.mtu)
        await prepared.discard()
        prepared = None
    if prepared is None:
        prepared = await prepare_remote(kernel, backend, RemotePreparation(
            checked.cid, checked.private_key, spec.underlay_ifname, checked.mtu,
            spec.underlay_netns, checked.listen_port, spec.workload.netns))
    return await _complete(kernel, backend, spec, checked, prepared)


async def _underlay_ns(kernel: KernelPort, ref: str | None) -> str | None:
    return None if ref is None else await resolve.namespace(kernel, ref, "underlay_netns")


async def _check(kernel: KernelPort, spec: RemoteVWireSpec) -> _Checked:
    """Validate ``spec`` whole and compute its MTU; nothing is created."""
    cid = validate.connection_id(spec.connection_id)
    workload_ns = await resolve.namespace(kernel, spec.workload.netns, "workload.netns")
    underlay_ns = await _underlay_ns(kernel, spec.underlay_netns)
    underlay_if = validate.ifname(spec.underlay_ifname, "underlay_ifname")
    try:
        underlay_mtu = await kernel.link_mtu(underlay_ns, underlay_if)
    except NotFound as err:
        raise NotFound(f"underlay_ifname: {err}") from None
    parse_private_key(spec.private_key, "private_key")
    listen_port = validate_port(spec.listen_port, "listen_port", allow_zero=True)
    own = parse_addresses(spec.workload, ROLE)
    peer_addrs = [
        validate.interface_cidr(a, f"peer.addresses[{i}]")
        for i, a in enumerate(spec.peer.addresses)
    ]
    wg_name = generated_ifname(cid, f"wireguard:{workload_ns}")
    plan = plan_end(ROLE, spec.workload, workload_ns, _final_name(spec.workload, wg_name),
                    peer_addrs, point_to_point=True)
    peer = _peer(spec, peer_addrs, plan.routes)
    ipv6_underlay = spec.ipv6_underlay
    if ipv6_underlay is None:
        ipv6_underlay = peer.endpoint is None or ip_address(peer.endpoint[0]).version == 6
    mtu = wireguard_mtu(
        min(underlay_mtu, spec.path_mtu or underlay_mtu),
        ipv6_underlay=ipv6_underlay,
        requested=spec.mtu,
        ipv6=any(a.version == 6 for a in own + peer_addrs),
    )
    return _Checked(cid, workload_ns, underlay_ns, spec.private_key, listen_port, mtu, peer_addrs,
                    plan, peer)


async def _complete(
    kernel: KernelPort, backend: WireGuardBackend, spec: RemoteVWireSpec, checked: _Checked,
    prepared: PreparedRemote,
) -> VWire:
    """Peer, move (if not done), rename and up, addresses, routes on ``prepared``; all or
    nothing (a failure removes ``prepared`` too)."""
    wg_name, workload_ns, cid = prepared.wg_name, checked.workload_ns, checked.cid
    final_name = _final_name(spec.workload, wg_name)
    plan, peer = checked.plan, checked.peer
    if plan.ifname != final_name:  # prepared under another name, which the routes name
        try:  # checked already: this cannot fail
            plan = plan_end(ROLE, spec.workload, workload_ns, final_name, checked.peer_addrs,
                            point_to_point=True)
            peer = _peer(spec, checked.peer_addrs, plan.routes)
        except BaseException:
            await prepared.discard()
            raise

    async def wireguard_metrics() -> dict[str, str]:
        metrics = await peer_metrics(backend, wg_name, peer.public_key)
        metrics["wireguard_device"] = "per-vwire"
        if peer.endpoint is not None:
            metrics["wireguard_endpoint"] = format_endpoint(*peer.endpoint)
        return metrics

    vwire = VWire(kernel, cid, checked.mtu, (End(ROLE, workload_ns, final_name),),
                  listen_port=prepared.actual_port, extra_metrics=wireguard_metrics)
    vwire.undo = prepared.undo
    vwire.wireguard = (wg_name, peer)
    baseline = backend.baseline(wg_name)
    if baseline is not None:  # a kept interface: its counters go on from its last vWire's
        vwire.baselines[vwire.ends[0]] = baseline

    async def steps() -> None:
        await backend.set_peer(wg_name, peer)
        if prepared.workload_ns is None:
            await _move(backend, prepared, workload_ns)
        prepared.where["name"] = final_name  # from the next call on (its undo knows both)
        # MTU and alias were set in the underlay and moved with the link; renamed as it comes up
        await apply_end(kernel, plan, mtu=checked.mtu, alias=marker(cid, wg_name),
                        configured=True, rename_from=wg_name)
        prepared.programmed = True

    return await program_or_rollback(vwire, steps)



def _peer(
    spec: RemoteVWireSpec, peer_addrs: Sequence[AnyInterface], routes: Sequence[Route]
) -> WgPeer:
    return validate_peer(
        WgPeer(
            public_key=spec.peer.public_key,
            endpoint=spec.peer.endpoint,
            allowed_ips=_allowed_ips(peer_addrs, routes),
            keepalive=spec.peer.keepalive,
        )
    )


def _final_name(att: Attachment, wg_name: str) -> str:
    if att.ifname is None or att.ifname == "":
        return wg_name
    return validate.ifname(att.ifname, f"{ROLE}.ifname")


def _allowed_ips(peer_addrs: Sequence[AnyInterface], routes: Sequence[Route]) -> tuple[str, ...]:
    """The other side's addresses (host prefixes) and every prefix this side routes to it."""
    prefixes = [str(ip_network(a.ip)) for a in peer_addrs]
    prefixes += [route.dst for route in routes]
    return tuple(dict.fromkeys(prefixes))


async def peer_metrics(
    backend: WireGuardBackend, wg_name: str, public_key: str
) -> dict[str, str]:
    """The counters and last-handshake age of peer ``public_key`` of device ``wg_name``."""
    return metrics_of_peer(await backend.stats(wg_name), public_key)


def metrics_of_peer(peers: Iterable[WgPeerStats], public_key: str) -> dict[str, str]:
    """The counters and last-handshake age of peer ``public_key`` among ``peers``."""
    for stats in peers:
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
