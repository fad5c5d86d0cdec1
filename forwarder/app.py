"""The forwarder process: its NetworkService chain, registration with nsmgr, start-up sweep.

Chain: the server prefix (:class:`sdk.chains.server.ServerChain`), then ``SetExpiry → FollowRoute
→ Xconnect → FilterMechanisms → [SignPathSegment] → Connect``: the forwarder sends each request on
along the route its nsmgr chose (the endpoint's socket, another node's nsmgr or a gateway;
:mod:`sdk.networkservice.route`), offering the class of mechanism that hop takes. With an SVID
directory requests must carry a valid signed path whose previous segment is signed by this
forwarder's nsmgr (whose SPIFFE ID it learns from the registration reply, ``path_ids[-1]``) with
the route bound, this hop signs its segment for the route's next hop, and other nodes are dialled
over mTLS.
On start the forwarder detects the WireGuard backend and the underlay (interface, address, MTU;
with ``site``, ``nat``, ``external_address`` and ``wan_mtu`` what its tunnels advertise, see
:mod:`forwarder.reach`), reserves its tunnel port range against port-0 binds in its namespace
(:mod:`forwarder.kernel.sysctl`), raises the inotify instance limit for wireguard-go daemons
(:mod:`forwarder.wireguard.inotify`), removes the vWires a
previous run of the same forwarder left behind, serves on its unix socket, and registers itself
with nsmgr (as an endpoint of the reserved service ``forwarder``) every few seconds, so a
restarted nsmgr learns about it again quickly. With the wireguard-go backend, a
:class:`forwarder.restart.RestartRecovery` restores the vWires of a daemon that was restarted
(addresses, routes, MTU, link up) and sets aside those whose daemon could not be restarted.
Beside the chain it serves its vWires' live counters (:mod:`forwarder.counters`) and, when it
serves metrics (``metrics_listen``), exports them per vWire too (:mod:`forwarder.metrics`).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import structlog
from prometheus_client.registry import REGISTRY

from api.mechanisms.wireguard import Reach
from api.proto.registry_pb2 import NetworkServiceEndpoint
from forwarder.counters import Counters, add_counters
from forwarder.kernel import KernelPort
from forwarder.kernel.sysctl import reserve_ports
from forwarder.metrics import VWireMetrics
from forwarder.namelock import NameLock
from forwarder.ports import PortPool, parse_range
from forwarder.restart import LiveVWires, RestartRecovery
from forwarder.settings import ForwarderSettings
from forwarder.shared import SharedDevices
from forwarder.specs import Node
from forwarder.underlay import advertised_address, detect_underlay
from forwarder.vwire import sweep
from forwarder.vwire.mtu import check_mtu
from forwarder.wireguard import UserspaceBackend, WireGuardBackend, describe
from forwarder.wireguard.inotify import raise_limit
from forwarder.xconnect import Xconnect
from sdk.chains.server import ServerChain, ServerOptions, add_chain_services
from sdk.channels import ChannelPool, insecure_factory
from sdk.errors import InvalidArgument
from sdk.grpcutil import ListenAddress, parse_address, serve, stop
from sdk.limits import new_server
from sdk.networkservice.client import Connect
from sdk.networkservice.core import NetworkServiceChain
from sdk.networkservice.expiry import SetExpiry
from sdk.networkservice.mechanisms import FilterMechanisms
from sdk.networkservice.route import FollowRoute
from sdk.networkservice.token import SignPathSegment
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import RegistryChain
from sdk.registry.keepalive import KeepRegistered
from sdk.registry.kinds import ENDPOINT
from sdk.registry.pathids import last_id
from sdk.security.source import FileSvidSource
from sdk.security.tls import SecureChannelFactory

FORWARDER_SERVICE = "forwarder"
_log = structlog.get_logger("forwarder")


class Forwarder:
    """One forwarder: build with settings, ``start()``, ``stop()``."""

    def __init__(
        self, config: ForwarderSettings, kernel: KernelPort, backend: WireGuardBackend
    ) -> None:
        self.config = config
        self.name = config.name or f"forwarder-{socket.gethostname()}"
        self.kernel = kernel
        self.backend = backend
        self.svids = FileSvidSource(Path(config.svid_dir)) if config.svid_dir else None
        self.pool = ChannelPool(
            SecureChannelFactory(self.svids) if self.svids else insecure_factory
        )
        if self.svids is not None:
            self.svids.subscribe(lambda _material: self.pool.renew())
        self.address: ListenAddress = parse_address(config.listen, "listen")
        self.server_chain: ServerChain | None = None
        self.chain: NetworkServiceChain | None = None
        self._server: grpc.aio.Server | None = None
        self.dataplane: dict[str, str] = {}
        self._registration: KeepRegistered[NetworkServiceEndpoint] | None = None
        self.recovery: RestartRecovery | None = None
        self.vwire_metrics: VWireMetrics | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        self.xconnect: Xconnect | None = None
        self.shared: SharedDevices | None = None
        self.name_lock = NameLock(self.name)

    async def start(self) -> None:
        if self.config.wireguard_device_linger < 0:  # before anything is changed
            raise InvalidArgument("wireguard_device_linger", "must be 0 or more seconds")
        interface, ip = await detect_underlay(
            self.kernel, self.config.underlay_interface, self.config.underlay_ip
        )
        node = await self._node(interface, ip)
        ports = parse_range(self.config.port_range)
        # Port-0 binds (a fresh wireguard-go's) must never take a tunnel port.
        await reserve_ports(None, ports)
        if isinstance(self.backend, UserspaceBackend):
            raise_limit()  # one inotify instance per daemon; the default allows ~64 vWires
            await self.backend.pool.sweep(None)  # a previous run's daemons started ahead
        # Other live forwarders of this name (fabrics side by side) keep theirs: namelock.py.
        self.name_lock.hold()
        removed = await sweep(self.kernel, self.backend, owner=self.name,
                              spare=self.name_lock.spare_others())
        info = await describe(self.backend)
        self.dataplane = {
            "wireguard": info.kind,
            "wireguard-version": info.version.lstrip("v"),
            "underlay-interface": interface,
            "underlay-ip": ip.replace(":", "_"),  # label values may not contain ':'
            "underlay-mtu": str(node.reach.underlay_mtu),
            "site": node.reach.site,
            "nat": node.reach.nat,
            "tunnel-address": node.address.replace(":", "_"),
            "wireguard-device": self.config.wireguard_device,
        }
        _log.info("forwarder starting", name=self.name, wireguard=info.kind,
                  wireguard_version=info.version, underlay=interface, underlay_ip=ip,
                  swept=len(removed))
        live: LiveVWires | None = None
        if isinstance(self.backend, UserspaceBackend):  # only wireguard-go daemons restart
            live = LiveVWires()
            self.recovery = RestartRecovery(self.kernel, live)
            self.recovery.attach(self.backend)
        pool = PortPool(ports)
        if self.config.wireguard_device == "shared":
            self.shared = await self._shared_devices(node, pool)
        xconnect = Xconnect(self.kernel, self.backend, node, pool, live,
                            prepare_ahead=self.config.prepare_ahead, shared=self.shared)
        self.xconnect = xconnect
        sign = (
            [SignPathSegment(self.svids, lifetime=self.config.token_lifetime)]
            if self.svids else []
        )
        self.server_chain = ServerChain(
            ServerOptions(self.name, "forwarder", self.svids, trace=self.config.trace),
            [
                SetExpiry(self.config.token_lifetime),
                FollowRoute(self._nsmgr_id),
                xconnect,
                FilterMechanisms(),
                *sign,
                Connect(self.pool),
            ],
        )
        self.chain = self.server_chain.chain
        server = new_server()
        await add_chain_services(server, self.chain)
        add_counters(server, Counters(self.name, xconnect.counters))
        if self.config.metrics_listen:  # per-vWire metrics beside the process's own
            self.vwire_metrics = VWireMetrics(xconnect.counters)
            REGISTRY.register(self.vwire_metrics)
            self._metrics_task = asyncio.create_task(self.vwire_metrics.keep_fresh())
        await serve(server, [self.address], insecure_tcp=False)
        self._server = server
        self._registration = KeepRegistered(
            RegistryChain([RemoteRegistry(
                ENDPOINT, self.pool.get(self.config.nsmgr), self.svids)]),
            self._record,
            self.config.register_interval,
        )
        await self._registration.start(must_succeed=False)  # nsmgr may come up later

    async def _node(self, interface: str, ip: str) -> Node:
        """This node as tunnels see it: underlay, advertised address, site, NAT and MTUs; bad
        settings raise InvalidArgument naming them."""
        config = self.config
        advertised = advertised_address(config.nat, config.external_address, ip)
        check_mtu(config.wan_mtu, ipv6=False, field="wan_mtu")
        if len(config.site) > 63 or not config.site.isprintable():
            raise InvalidArgument("site", "must be at most 63 printable characters, e.g. aws-eu")
        underlay_mtu = (await self.kernel.get_link(None, interface)).mtu
        return Node(self.name, ip, interface, advertised_ip=advertised, reach=Reach(
            site=config.site, nat=config.nat, underlay_mtu=underlay_mtu,
            wan_mtu=config.wan_mtu))

    async def _shared_devices(self, node: Node, pool: PortPool) -> SharedDevices:
        """The shared devices and their namespace (forwarder/shared/devices.py)."""
        shared = SharedDevices(self.kernel, self.backend, pool, self.name, node.underlay_netns,
                               linger=self.config.wireguard_device_linger)
        await shared.start()
        # label values allow no '/': /proc/<pid>/fd/<n> reads proc-<pid>-fd-<n>
        self.dataplane["shared-namespace"] = shared.netns.strip("/").replace("/", "-")
        _log.info("shared devices' namespace", path=shared.netns)
        if isinstance(self.backend, UserspaceBackend):
            shared.watch(self.backend.subscribe)
        return shared

    def _nsmgr_id(self) -> str:
        """The SPIFFE ID of this node's nsmgr, from the last registration reply ('' before)."""
        registered = self._registration.registered if self._registration else None
        return last_id(registered) if registered is not None else ""

    def _record(self) -> NetworkServiceEndpoint:
        record = NetworkServiceEndpoint(
            name=self.name, network_service_names=[FORWARDER_SERVICE], url=self.address.url
        )
        if self.svids is not None:
            record.path_ids.append(str(self.svids.current().spiffe_id))
        record.network_service_labels[FORWARDER_SERVICE].labels.update(self.dataplane)
        return record

    async def stop(self, grace: float = 1.0) -> None:
        """Unregister, stop serving, close every vWire this forwarder made, stop the
        wireguard-go daemons it started ahead."""
        if self._registration is not None:
            await self._registration.stop()
        if self._server is not None:
            await stop(self._server, [self.address], grace)
            self._server = None
        if self._metrics_task is not None:
            self._metrics_task.cancel()
            await asyncio.gather(self._metrics_task, return_exceptions=True)
            self._metrics_task = None
        if self.vwire_metrics is not None:
            REGISTRY.unregister(self.vwire_metrics)
            self.vwire_metrics = None
        if self.server_chain is not None:
            await self.server_chain.timeout.stop()
        if self.xconnect is not None:
            await self.xconnect.stop()
        if self.shared is not None:
            await self.shared.stop()
            self.shared = None
        if self.recovery is not None:
            await self.recovery.close()
            self.recovery = None
        if isinstance(self.backend, UserspaceBackend):
            await self.backend.pool.close()  # daemons started ahead belong to no vWire
        await sweep(self.kernel, self.backend, owner=self.name,
                    spare=self.name_lock.spare_all_but_mine)
        self.name_lock.release()
        await self.pool.close()
        _log.info("forwarder stopped", name=self.name)
