"""Element ``Xconnect``: turns negotiated connections into vWires on this node.

Contract, per request (place it after ``Metadata``/``Timeout``, in front of ``Connect`` to nsmgr):

* **client side** — the caller offers a KERNEL mechanism (the client's namespace and interface
  name): the request goes on offering KERNEL (if the endpoint is on this node) and WIREGUARD
  (if not) with this node's advertised address, a tunnel port, a fresh public key and this
  node's :class:`~api.mechanisms.wireguard.Reach` (site, NAT, underlay MTUs). On the way back,
  the mechanism the far side chose decides: KERNEL → a local veth cross-connect into the
  endpoint's namespace; WIREGUARD → this node's end of a tunnel, in the client's namespace.
  The caller gets its KERNEL mechanism back.
* **endpoint side** — the caller offers WIREGUARD (another node's forwarder): when neither node
  can reach the other (:func:`forwarder.reach.check_reachable`) the request fails at once with
  ``FailedPrecondition`` naming both; else it goes on offering KERNEL to the endpoint; on the
  way back the tunnel's end is made in the endpoint's namespace and the caller gets WIREGUARD
  with this node's advertised address, port, key and reach, and the path's tunnel MTU.
* **NAT and MTU** (both sides, :mod:`forwarder.reach`): the peer's endpoint is the address this
  node can dial (none when the peer is behind a masquerading NAT in another site: it is learnt
  from the peer's first handshake), keepalive 25 s only from behind a masquerading NAT, and the
  tunnel MTU comes from the path's underlay MTU (both ends and, across sites, the WAN MTU), the
  same figure on both ends. A side that alone can open its tunnel knocks until the far side
  answers (:mod:`forwarder.knock`); :meth:`Xconnect.stop` ends that.
* **Shared devices** (``shared``, :mod:`forwarder.shared`): the client side also offers its
  node's shared-device key; an endpoint side that shares and that the client side can dial
  answers with its shared device's port, key and address space instead of a port and key of
  the connection's own, and both sides program a veth over the device pair
  (:func:`forwarder.shared.program_shared`); no preparation ahead then. An answer naming a
  shared device that was not offered, without a port or beyond the space bound is refused
  (:func:`forwarder.specs.check_shared_answer`). The specs come from :mod:`forwarder.specs`.
* The vWire's MTU goes into ``context.MTU``; its counters into this hop's path segment
  ``metrics``. A refresh that changes nothing keeps the vWire; one that changes it rebuilds it.
* **Prepared ahead** (``prepare_ahead``, :mod:`forwarder.vwire.ahead`): on a first request the
  tunnel is made while the request is downstream — client side: in the client's namespace at
  the MTU this network service's last vWire had (else this node's underlay MTU's), none for a
  service whose last endpoint was on this node; endpoint side: at the path MTU, in the
  namespace the chosen endpoint answered with last time (asking the backend for a device
  pooled there), else in the underlay. The answer's vWire takes it over when it fits, else it
  is removed and the vWire made as without it; a failed, refused or cancelled request and a
  local answer remove it before the port is freed. At most 1024 services and endpoints are
  remembered.
* If programming fails, the rest of the path is closed again and the error raised: nothing is
  left half-applied. Close removes the vWire (and frees the port) after closing downstream, even
  when downstream fails. Private keys stay in this process's memory only.
* With a :class:`forwarder.restart.LiveVWires` registry (``live``), every remote vWire is
  registered while it is programmed (so :class:`forwarder.restart.RestartRecovery` can restore
  it after a wireguard-go restart) and forgotten before it is closed or replaced. A vWire the
  recovery reports lost (its daemon could not be restarted) is moved aside: the connection's
  next request closes it and programs a new one from the same spec (same key and port, so the
  far side's peer stays valid); a close removes it like a live one.
* :meth:`Xconnect.counters` reads the counters of every vWire now (for
  :class:`forwarder.counters.Counters`, the live answer behind ``nsmctl status``).

Connection ids given to the data plane are ``<forwarder name>/<segment id>``, which is how a
restarted forwarder recognises (and sweeps) only its own leftovers; forwarders of one name on one
host tell theirs apart by the marker's process and the name lock (:mod:`forwarder.namelock`).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from functools import partial
from typing import Any

import structlog

from api.mechanisms.kernel import KernelMechanism, is_kernel
from api.mechanisms.wireguard import WireguardMechanism, is_wireguard
from api.proto.connection_pb2 import Connection, Mechanism
from api.proto.networkservice_pb2 import NetworkServiceRequest
from forwarder.kernel import KernelPort
from forwarder.knock import Knocker
from forwarder.ports import PortPool
from forwarder.reach import (
    check_reachable,
    dial_address,
    ipv6_underlay,
    path_mtu,
)
from forwarder.restart import LiveVWire, LiveVWires, wireguard_name
from forwarder.shared import (
    SharedDevices,
    SharedVWireSpec,
    program_shared,
)
from forwarder.specs import (
    Node,
    Peer,
    check_shared_answer,
    client_attachment,
    endpoint_attachment,
    prefixes,
    remote_spec,
    shared_spec,
    shares,
)
from forwarder.vwire import (
    Ahead,
    LocalVWireSpec,
    PreparedRemote,
    RemotePreparation,
    RemoteVWireSpec,
    VWire,
    program_local,
    program_remote,
    validate,
)
from forwarder.vwire.mtu import wireguard_mtu
from forwarder.wireguard import WireGuardBackend, generate_keypair
from sdk.chain import Key, Values
from sdk.errors import FabricError, InvalidArgument, NotFound, quoted
from sdk.lru import Lru
from sdk.networkservice.core import NetworkServiceElement, NSCursor

_log = structlog.get_logger("forwarder.xconnect")
_REMEMBERED = 1024  # services' MTUs and endpoints' namespaces remembered (a few KB)

#: Per-connection metadata this element keeps: the live vWire and what it was built from, the
#: tunnel key pair, and a vWire set aside after its daemon could not be restarted.
AnySpec = LocalVWireSpec | RemoteVWireSpec | SharedVWireSpec
VWIRE: Key[VWire] = Key("xconnect.vwire")
SPEC: Key[AnySpec] = Key("xconnect.spec")
KEYS: Key[tuple[str, str]] = Key("xconnect.keys")
LOST: Key[VWire] = Key("xconnect.lost_vwire")


def _unchanged(previous: AnySpec | None, spec: AnySpec, mtu: int) -> bool:
    """Whether ``spec`` asks for the vWire ``previous`` made (whose MTU came out as ``mtu``).

    A refresh carries back the context MTU this element reported, so an MTU equal to the
    vWire's own is no change (without this every refresh rebuilt the vWire).
    """
    if previous is None or type(previous) is not type(spec):
        return False
    return spec == previous or (spec.mtu == mtu and replace(spec, mtu=previous.mtu) == previous)


def _offered(request: NetworkServiceRequest, test: Any, what: str) -> Any:
    for mechanism in request.mechanism_preferences:
        if test(mechanism):
            return mechanism
    raise InvalidArgument("mechanism_preferences", f"no {what} mechanism was offered")


class Xconnect(NetworkServiceElement):
    """See the module docstring."""

    def __init__(
        self, kernel: KernelPort, backend: WireGuardBackend, node: Node, ports: PortPool,
        live: LiveVWires | None = None, *, prepare_ahead: bool = True,
        shared: SharedDevices | None = None,
    ) -> None:
        self.kernel = kernel
        self.shared = shared
        self.prepare_ahead = prepare_ahead
        #: what the last first request for a network service came out as: the tunnel MTU
        #: (None: the endpoint was on this node), and the namespace each endpoint answered with
        self._service_mtu: Lru[str, int | None] = Lru(_REMEMBERED)
        self._endpoint_netns: Lru[str, str] = Lru(_REMEMBERED)
        self.backend = backend
        self.node = node
        self.ports = ports
        self.live = live
        self._vwires: dict[str, VWire] = {}  # by this hop's connection id
        self.knocker = Knocker(backend)

    async def stop(self) -> None:
        """End background work (knocking); vWires stay until closed or swept."""
        await self.knocker.stop()

    async def counters(self) -> dict[str, dict[str, str]]:
        """The counters of every vWire, read now, by this hop's connection id (a vWire whose
        counters cannot be read is left out)."""
        result: dict[str, dict[str, str]] = {}
        for conn_id, vwire in list(self._vwires.items()):
            with contextlib.suppress(FabricError):
                result[conn_id] = await vwire.metrics()
        return result

    def _vwire_id(self, conn: Connection) -> str:
        return f"{self.node.name}/{conn.id}"

    def _keys(self, md: Values) -> tuple[str, str]:
        if KEYS not in md:
            md[KEYS] = generate_keypair()
        keys: tuple[str, str] = md[KEYS]
        return keys

    async def request(self, request: NetworkServiceRequest, next: NSCursor) -> Connection:
        md = next.ctx.metadata
        if any(is_wireguard(m) for m in request.mechanism_preferences) and not any(
            is_kernel(m) for m in request.mechanism_preferences
        ):
            return await self._endpoint_side(request, next, md)
        return await self._client_side(request, next, md)

    async def _forward(
        self, request: NetworkServiceRequest, next: NSCursor, md: Values, vid: str,
        offer: list[Mechanism], ahead: Ahead,
    ) -> Connection:
        """Send the request on offering ``offer``; a first request that fails removes its
        preparation and frees its port."""
        del request.mechanism_preferences[:]
        request.mechanism_preferences.extend(offer)
        try:
            return await next.request(request)
        except BaseException:
            await ahead.discard()
            if VWIRE not in md:
                self.ports.give_back(vid)
            raise

    def _first(self, md: Values) -> bool:
        """Whether a preparation ahead may run: on, and no vWire (live or lost) exists yet."""
        return self.prepare_ahead and VWIRE not in md and LOST not in md

    def _ahead_client(
        self, request: NetworkServiceRequest, md: Values, vid: str, netns: str, port: int
    ) -> Ahead:
        """Start the client side's preparation, in the client's namespace, at the MTU this
        service's last vWire had (else this node's underlay MTU's); none for a service whose
        last endpoint was on this node, or when disabled."""
        service = request.connection.network_service
        if not self._first(md) or (service in self._service_mtu
                                   and self._service_mtu.get(service) is None):
            return Ahead.none()
        mtu = self._service_mtu.get(service) or self._tunnel_mtu(
            self.node.reach.underlay_mtu, ipv6_underlay(self.node.underlay_ip),
            request.connection.context.MTU)
        if mtu is None:
            return Ahead.none()
        return self._ahead(vid, md, port, mtu, netns)

    def _ahead_endpoint(
        self, request: NetworkServiceRequest, md: Values, vid: str, near: WireguardMechanism,
        port: int,
    ) -> Ahead:
        """Start the endpoint side's preparation at the path's MTU, moved into the namespace
        the chosen endpoint answered with last time (if it did)."""
        if not self._first(md):
            return Ahead.none()
        me = self.node.own_reach
        dial = dial_address(me, near.src, near.src_ip)
        underlay = min(me.underlay_mtu, path_mtu(me, near.src) or me.underlay_mtu)
        mtu = self._tunnel_mtu(underlay, ipv6_underlay(dial or "", near.src_ip,
                                                       self.node.underlay_ip),
                               request.connection.context.MTU)
        if mtu is None:
            return Ahead.none()
        netns = self._endpoint_netns.get(request.connection.network_service_endpoint_name)
        return self._ahead(vid, md, port, mtu, netns, ready_in_workload=True)

    @staticmethod
    def _tunnel_mtu(underlay: int, ipv6: bool, requested: int) -> int | None:
        """The tunnel MTU over ``underlay`` (None: unknown or unusable)."""
        if underlay <= 0:
            return None
        try:
            return wireguard_mtu(underlay, ipv6_underlay=ipv6, requested=requested or None,
                                 ipv6=False)
        except FabricError:
            return None

    def _ahead(self, vid: str, md: Values, port: int, mtu: int, netns: str | None, *,
               ready_in_workload: bool = False) -> Ahead:
        private, _ = self._keys(md)
        return Ahead.start(self.kernel, self.backend, RemotePreparation(
            vid, private, self.node.underlay_interface, mtu, self.node.underlay_netns, port,
            netns, ready_in_workload))

    async def _client_side(
        self, request: NetworkServiceRequest, next: NSCursor, md: Values
    ) -> Connection:
        client = KernelMechanism.parse(_offered(request, is_kernel, "KERNEL"))
        if not client.netns_url:
            raise InvalidArgument(
                "mechanism_preferences[KERNEL].parameters[inodeURL]",
                "the client must name its network namespace",
            )
        try:  # fail before the rest of the path does any work for a client that is gone
            await self.kernel.resolve_netns(client.netns_url)
        except NotFound as exc:
            raise InvalidArgument(
                "mechanism_preferences[KERNEL].parameters[inodeURL]", str(exc)
            ) from None
        except InvalidArgument as exc:
            raise InvalidArgument(
                "mechanism_preferences[KERNEL].parameters[inodeURL]", exc.problem
            ) from None
        if client.interface:  # likewise for a name the kernel would refuse at the very end
            validate.ifname(client.interface, "mechanism_preferences[KERNEL].parameters[name]")
        vid = self._vwire_id(request.connection)
        _, public = self._keys(md)
        port = self.ports.take(vid)
        offer = WireguardMechanism(
            src_ip=self.node.address, src_port=port, src_public_key=public,
            src=self.node.own_reach,
            src_shared_key=self.shared.public_key if self.shared is not None else "",
        )
        ahead = (Ahead.none() if self.shared is not None
                 else self._ahead_client(request, md, vid, client.netns_url, port))
        reply = await self._forward(
            request, next, md, vid, [KernelMechanism().to_proto(), offer.to_proto()], ahead
        )
        ip = reply.context.ip_context
        spec: AnySpec
        if is_kernel(reply.mechanism):
            await ahead.discard()
            self.ports.give_back(vid)
            self._service_mtu.put(request.connection.network_service, None)
            endpoint = KernelMechanism.parse(reply.mechanism)
            spec = LocalVWireSpec(
                vid, client_attachment(client, ip), endpoint_attachment(endpoint, ip),
                reply.context.MTU or None,
            )
        elif is_wireguard(reply.mechanism):
            try:
                far = WireguardMechanism.parse(reply.mechanism)
                check_reachable(self.node.own_reach, self.node.address, far.dst, far.dst_ip)
                if far.shared_space is not None:
                    check_shared_answer(far, self.shared is not None)
            except FabricError:
                await self._abandon(reply, next, md, vid, ahead)
                raise
            if far.shared_space is not None:
                await ahead.discard()
                self.ports.give_back(vid)
                spec = shared_spec(
                    self.node, vid, client_attachment(client, ip),
                    Peer(far.dst_public_key, far.dst_ip, far.dst_port, far.dst),
                    tuple(ip.dst_ip_addrs), prefixes(ip.dst_routes), far.shared_space,
                    far.mtu or reply.context.MTU or None,
                )
            else:
                spec = remote_spec(
                    self.node, vid, client_attachment(client, ip),
                    Peer(far.dst_public_key, far.dst_ip, far.dst_port, far.dst),
                    tuple(ip.dst_ip_addrs), port, self._keys(md)[0],
                    far.mtu or reply.context.MTU or None,
                )
        else:
            await self._abandon(reply, next, md, vid, ahead)
            raise InvalidArgument(
                "mechanism",
                f"the far side chose {quoted(reply.mechanism.type)}: not supported here",
            )
        vwire = await self._program(spec, reply, next, md, ahead)
        if not isinstance(spec, LocalVWireSpec):
            self._service_mtu.put(request.connection.network_service, vwire.mtu)
        reply.mechanism.CopyFrom(
            KernelMechanism(client.netns_url, vwire.ends[0].ifname).to_proto()
        )
        return await self._report(reply, vwire)

    async def _endpoint_side(
        self, request: NetworkServiceRequest, next: NSCursor, md: Values
    ) -> Connection:
        near = WireguardMechanism.parse(
            _offered(request, is_wireguard, "WIREGUARD"), "mechanism_preferences[WIREGUARD]"
        )
        if not near.src_public_key:
            raise InvalidArgument(
                "mechanism_preferences[WIREGUARD].parameters[src_public_key]",
                "the client-side forwarder must send its public key",
            )
        check_reachable(near.src, near.src_ip, self.node.own_reach, self.node.address)
        vid = self._vwire_id(request.connection)
        shared = shares(self.node, self.shared is not None, near)
        port = 0 if shared else self.ports.take(vid)
        ahead = Ahead.none() if shared else self._ahead_endpoint(request, md, vid, near, port)
        reply = await self._forward(request, next, md, vid, [KernelMechanism().to_proto()],
                                    ahead)
        if not is_kernel(reply.mechanism):
            await self._abandon(reply, next, md, vid, ahead)
            raise InvalidArgument("mechanism", "the endpoint must accept a KERNEL mechanism")
        ip = reply.context.ip_context
        endpoint = KernelMechanism.parse(reply.mechanism)
        if reply.network_service_endpoint_name and endpoint.netns_url:
            self._endpoint_netns.put(reply.network_service_endpoint_name, endpoint.netns_url)
        spec: AnySpec
        if shared:
            spec = shared_spec(
                self.node, vid, endpoint_attachment(endpoint, ip),
                Peer(near.src_shared_key, near.src_ip, 0, near.src), tuple(ip.src_ip_addrs),
                prefixes(ip.src_routes), None, reply.context.MTU or None,
            )
        else:
            spec = remote_spec(
                self.node, vid, endpoint_attachment(endpoint, ip),
                Peer(near.src_public_key, near.src_ip, near.src_port, near.src),
                tuple(ip.src_ip_addrs), port, self._keys(md)[0], reply.context.MTU or None,
            )
        vwire = await self._program(spec, reply, next, md, ahead)
        if self.shared is not None and isinstance(spec, SharedVWireSpec):
            answer = replace(near.with_destination(
                self.node.address, vwire.listen_port or 0, self.shared.public_key, vwire.mtu,
                self.node.own_reach), shared_space=vwire.space)
        else:
            _, public = self._keys(md)  # a vWire's own keys only with its own device
            answer = near.with_destination(self.node.address, port, public, vwire.mtu,
                                           self.node.own_reach)
        reply.mechanism.CopyFrom(answer.to_proto())
        return await self._report(reply, vwire)

    async def _program(
        self, spec: AnySpec, reply: Connection, next: NSCursor,
        md: Values, ahead: Ahead,
    ) -> VWire:
        """Make (or keep, or rebuild) the vWire of ``spec``; a remote one takes over the
        preparation ``ahead``, which is removed on every other way out."""
        current: VWire | None = md.get(VWIRE)
        if current is not None and _unchanged(md.get(SPEC), spec, current.mtu):
            return current
        if current is not None:
            self._forget(current)
            self.knocker.cancel(spec.connection_id)
            await current.close()
            md.pop(VWIRE, None)
        try:
            lost: VWire | None = md.get(LOST)
            if lost is not None:  # its daemon is gone for good: remove it, then rebuild
                await lost.close()
                md.pop(LOST)
            if isinstance(spec, LocalVWireSpec):
                await ahead.discard()
                vwire = await program_local(self.kernel, spec)
            elif isinstance(spec, SharedVWireSpec):
                await ahead.discard()
                assert self.shared is not None  # only chosen when this forwarder shares
                vwire = await program_shared(self.kernel, self.shared, spec,
                                             partial(self._set_aside, md))
            else:
                prepared: PreparedRemote | None = await ahead.take()
                vwire = await program_remote(self.kernel, self.backend, spec, prepared)
        except BaseException:
            await ahead.discard()
            await self._close_quietly(reply, next)
            self.ports.give_back(spec.connection_id)
            md.pop(SPEC, None)
            raise
        md[VWIRE], md[SPEC] = vwire, spec
        if isinstance(spec, RemoteVWireSpec):
            await self._track(vwire, spec, md)
            if spec.peer.keepalive and spec.peer.endpoint and vwire.wireguard is not None:
                self.knocker.start(spec.connection_id, *vwire.wireguard)  # only we can dial
        _log.info("vwire programmed", kind=type(spec).__name__, mtu=vwire.mtu,
                  interfaces=[e.ifname for e in vwire.ends])
        return vwire

    async def _track(self, vwire: VWire, spec: RemoteVWireSpec, md: Values) -> None:
        """Register a remote vWire for restart recovery (best effort: never fails a request)."""
        if self.live is None:
            return
        # program_remote made it under this name; read back from its marker only otherwise
        wg_name = vwire.wireguard[0] if vwire.wireguard is not None else None
        try:
            wg_name = wg_name or await wireguard_name(self.kernel, vwire)
        except FabricError as exc:
            _log.warning("cannot read the vwire's wireguard name", error=str(exc))
        if wg_name is None:
            _log.warning("vwire not protected against wireguard-go restarts: no wireguard name",
                         interface=vwire.ends[0].ifname)
            return

        self.live.add(wg_name, LiveVWire(vwire, spec, partial(self._set_aside, md, vwire)))

    @staticmethod
    def _set_aside(md: Values, vwire: VWire) -> None:
        """``vwire`` was lost (its daemon could not be brought back): set it aside; the
        connection's next request or its close removes it."""
        if md.get(VWIRE) is vwire:
            md.pop(VWIRE)
            md.pop(SPEC, None)
            md[LOST] = vwire

    def _forget(self, vwire: VWire) -> None:
        if self.live is not None:
            self.live.forget(vwire)

    async def _report(self, reply: Connection, vwire: VWire) -> Connection:
        reply.context.MTU = vwire.mtu
        segment = reply.path.path_segments[reply.path.index]
        self._vwires[segment.id] = vwire
        segment.metrics.clear()
        with contextlib.suppress(FabricError):
            segment.metrics.update(await vwire.metrics())
        return reply

    async def _abandon(
        self, reply: Connection, next: NSCursor, md: Values, vid: str, ahead: Ahead
    ) -> None:
        """The far side's answer cannot be used: close the rest of the path again and, on a first
        request, remove the preparation and free the tunnel port (as :meth:`_forward` does when
        the request fails)."""
        await ahead.discard()
        await self._close_quietly(reply, next)
        if VWIRE not in md:
            self.ports.give_back(vid)

    async def _close_quietly(self, conn: Connection, next: NSCursor) -> None:
        try:
            await next.close(conn)
        except FabricError as exc:
            _log.warning("closing the rest of the path after a failure failed", error=str(exc))

    async def close(self, conn: Connection, next: NSCursor) -> None:
        md = next.ctx.metadata
        self._vwires.pop(conn.id, None)
        try:
            await next.close(conn)
        finally:
            self.knocker.cancel(self._vwire_id(conn))
            for key in (LOST, VWIRE):
                vwire: VWire | None = md.pop(key, None)
                if vwire is not None:
                    self._forget(vwire)
                    await vwire.close()
            self.ports.give_back(self._vwire_id(conn))
