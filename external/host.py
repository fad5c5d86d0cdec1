"""One external host served: its router namespace, its vWire, and its status record.

Contract of :class:`ServedHost`:

* :meth:`up` builds, in order: the router namespace, the vWire to the host's service (requested
  through the node's nsmgr with the client chain, :mod:`sdk.chains.client`, KERNEL mechanism into
  the router namespace; refreshed and healed until closed), the WireGuard device with the host's
  key as its only peer on the host's port, the host's routes and NAT (below), and returns the
  :class:`sdk.external.ExternalStatus` to publish. On any failure
  everything built so far is undone (:meth:`down`) and the error raised.
* The host's and the service's addresses are stable (:func:`stable_addresses`, from the host's
  port) and mapped onto the vWire's by the router's NAT (:meth:`external.router.Router.route`):
  a heal that changes the vWire's addresses only changes the mapping (``on_change``), and a
  restarted router gives the host the same addresses, so its exported file stays valid.
* :meth:`down` deletes the namespace first (traffic stops at once), then closes the vWire and
  stops keeping it; idempotent.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from api.mechanisms.kernel import KernelMechanism
from api.proto.connection_pb2 import Connection
from api.proto.networkservice_pb2 import NetworkServiceRequest
from external.router import NatPair, Router
from external.state import HostKeys
from sdk.chain import CallContext
from sdk.chains.client import ClientChain, ClientOptions
from sdk.channels import ChannelPool
from sdk.errors import DataplaneError
from sdk.external import ExternalHost, ExternalStatus
from sdk.security.source import SvidSource

log = structlog.get_logger("external.host")

VWIRE_INTERFACE = "nsm0"  # a served server's router has no vWire of its own


def vwire_interface(conn_id: str) -> str:
    """The vWire's interface in the router namespace: unique per connection, so a vWire the
    forwarder still restores from before a router restart never takes the new one's name."""
    return "nsm" + hashlib.sha256(conn_id.encode()).hexdigest()[:8]
WIREGUARD_OVERHEAD = {4: 60, 6: 80}  # bytes of outer IP + UDP + WireGuard headers


def interface_name(netns: str) -> str:
    """A WireGuard link name unique to the router namespace (wireguard-go's control sockets
    are global, so names must not clash across namespaces)."""
    return "vx" + hashlib.sha256(netns.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Serving:
    """What every served host shares: where hosts dial, and how vWires are requested."""

    public_address: str
    public_mtu: int
    public_netns: str
    nsmgr: str
    pool: ChannelPool
    client_name: str
    netns_prefix: str
    svids: SvidSource | None = None
    nsmgr_id: str = ""
    lifetime: float = 60.0
    request_timeout: float = 15.0
    serve_cidr: str = "100.65.0.0/16"
    socket_dir: Path = Path("/var/run/vwire")
    host_cidrs: tuple[str, ...] = ("100.66.0.0/16", "fd00:66::/64")
    first_port: int = 51900


def host_mtu(conn: Connection, serving: Serving) -> int:
    """The host's tunnel MTU: the vWire's, and what the public path carries after WireGuard."""
    version = ipaddress.ip_address(serving.public_address).version
    outer = serving.public_mtu - WIREGUARD_OVERHEAD[version]
    return min(conn.context.MTU, outer) if conn.context.MTU else outer


def _host(cidr: str) -> str:
    address = ipaddress.ip_interface(cidr).ip
    return f"{address}/{address.max_prefixlen}"


def stable_addresses(keys: HostKeys, serving: Serving) -> dict[int, tuple[str, str]]:
    """Per IP version, the host's and the service's stable addresses: the host's own /30 (by
    its port's place in the range) of each of ``host_cidrs``, service first, host second."""
    index = keys.port - serving.first_port
    found: dict[int, tuple[str, str]] = {}
    for cidr in serving.host_cidrs:
        net = ipaddress.ip_network(cidr)
        found[net.version] = (f"{net[4 * index + 2]}/{net.max_prefixlen}",
                              f"{net[4 * index + 1]}/{net.max_prefixlen}")
    return found


def nat_pairs(conn: Connection, keys: HostKeys, serving: Serving) -> list[NatPair]:
    """The 1:1 mappings of ``conn`` for every IP version both it and ``host_cidrs`` have."""
    ip = conn.context.ip_context
    pairs = []
    for version, (host, service) in sorted(stable_addresses(keys, serving).items()):
        client = [a for a in ip.src_ip_addrs if ipaddress.ip_interface(a).version == version]
        endpoint = [a for a in ip.dst_ip_addrs if ipaddress.ip_interface(a).version == version]
        if client and endpoint:
            pairs.append(NatPair(host, service, _host(client[0]), _host(endpoint[0])))
    if not pairs:
        raise DataplaneError("the vWire has no address of a family in --host-cidrs")
    return pairs


def status_of(host: ExternalHost, conn: Connection, keys: HostKeys,
              serving: Serving) -> ExternalStatus:
    """The status record of a host served over ``conn``: its stable addresses, the service's
    and the vWire's extra routes as what it routes into the tunnel, DNS servers with the
    endpoint's addresses replaced by the service's."""
    pairs = nat_pairs(conn, keys, serving)
    ip = conn.context.ip_context
    endpoints = {p.vwire_endpoint for p in pairs}  # their routes are the service's address now
    routes = [str(ipaddress.ip_network(route.prefix, strict=False)) for route in ip.src_routes]
    routes = [route for route in routes if route not in endpoints]
    seen_as = {str(ipaddress.ip_interface(p.vwire_endpoint).ip):
               str(ipaddress.ip_interface(p.service).ip) for p in pairs}
    dns = [seen_as.get(server, server)
           for config in conn.context.dns_context.configs for server in config.dns_server_ips]
    return ExternalStatus(
        host.name, "ready", (serving.public_address, keys.port), keys.private_key.public_key(),
        tuple(p.host for p in pairs),
        tuple(dict.fromkeys([p.service for p in pairs] + routes)),
        host_mtu(conn, serving), tuple(dns),
    )


class ServedHost:
    """See the module docstring."""

    def __init__(self, host: ExternalHost, keys: HostKeys, serving: Serving,
                 on_status: Callable[[ExternalStatus], None] | None = None) -> None:
        self.host = host
        self.keys = keys
        self.serving = serving
        self.on_status = on_status
        netns = f"{serving.netns_prefix}{host.name}"
        self._id = str(uuid.uuid4())
        self.router = Router(netns, interface_name(netns), vwire_interface(self._id),
                             public_netns=serving.public_netns)
        self.client = ClientChain(
            ClientOptions(name=serving.client_name, nsmgr=serving.nsmgr, pool=serving.pool,
                          lifetime=serving.lifetime, request_timeout=serving.request_timeout,
                          svids=serving.svids, nsmgr_id=serving.nsmgr_id),
            on_change=self._changed,
        )
        self.connection: Connection | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def up(self) -> ExternalStatus:
        try:
            await self.router.create()
            conn = await self._request()
            self.connection = conn
            await self.router.wireguard(self.keys.private_key, self.keys.port,
                                        self.host.public_key, host_mtu(conn, self.serving))
            await self.router.route(nat_pairs(conn, self.keys, self.serving))
        except BaseException:
            await self.down()
            raise
        log.info("external_host_up", name=self.host.name, service=self.host.service,
                 port=self.keys.port, backend=self.router.backend)
        return status_of(self.host, conn, self.keys, self.serving)

    async def _request(self) -> Connection:
        request = NetworkServiceRequest()
        request.connection.id = self._id
        request.connection.network_service = self.host.service
        request.mechanism_preferences.append(
            KernelMechanism(self.router.netns_path, self.router.vwire_interface).to_proto())
        return await self.client.chain.run_request(
            request, CallContext.with_timeout(self.serving.request_timeout))

    def _changed(self, conn: Connection) -> None:
        old = self.connection
        self.connection = conn
        if old is None or old.context.ip_context == conn.context.ip_context:
            return
        task = asyncio.get_running_loop().create_task(self._remap(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _remap(self, conn: Connection) -> None:
        """A heal changed the vWire's addresses: new NAT rules; the host's file stays valid."""
        try:
            await self.router.route(nat_pairs(conn, self.keys, self.serving))
        except Exception:
            log.exception("external_remap_failed", name=self.host.name)
            return
        log.info("external_host_remapped", name=self.host.name)
        if self.on_status is not None:
            self.on_status(status_of(self.host, conn, self.keys, self.serving))

    async def down(self) -> None:
        await self.router.delete()
        for task in list(self._tasks):
            task.cancel()
        await self.client.stop()
        conn, self.connection = self.connection, None
        if conn is not None:
            try:
                await self.client.chain.run_close(
                    conn, CallContext.with_timeout(self.serving.request_timeout))
            except Exception as exc:  # the path expires on its own; the namespace is gone
                log.warning("external_vwire_close_failed", name=self.host.name, error=str(exc))
        log.info("external_host_down", name=self.host.name)
