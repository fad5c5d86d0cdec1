"""The kernel WireGuard backend: link kind ``wireguard`` plus WireGuard generic netlink.

Contract:
- ``create`` adds the link in the underlay namespace (the kernel binds the UDP socket in the
  namespace where the link was created, and keeps it there when the link moves), sets key and
  port, and returns the port the kernel reports. A failure deletes the link again.
- WireGuard generic netlink finds a device by name in the namespace of the netlink socket, so
  the backend remembers where each link is (underlay until ``move``, then the target).
- Netlink sockets are made with setns() in a throwaway thread, never by forking; moving and
  deleting links goes through the kernel port (:mod:`forwarder.kernel`).
- Netlink errors become :class:`DataplaneError` with the code; the private key only reaches
  pyroute2's request, never a message. :func:`kernel_wireguard_available` is the detector:
  ``pyroute2.WireGuard()`` raises ``NetlinkError`` where the module is missing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic.wireguard import AsyncWireGuard, WireGuard

from forwarder.kernel import KernelPort, LinkStats, Netns, real_kernel
from forwarder.kernel.netns import netlink_socket_in
from forwarder.wireguard.keys import parse_public_key
from forwarder.wireguard.model import (
    WgPeer,
    WgPeerStats,
    validate_create,
    validate_ifname,
    validate_peer,
)
from forwarder.wireguard.netns import check_netns, genl_socket_in
from sdk.errors import AlreadyExists, DataplaneError, NotFound

log = structlog.get_logger()


def _probe() -> bool:
    try:
        probe = WireGuard()
    except (NetlinkError, OSError):
        return False
    probe.close()
    return True


async def kernel_wireguard_available() -> bool:
    """Whether this kernel speaks WireGuard generic netlink (the sync probe runs in a thread)."""
    return await asyncio.to_thread(_probe)


@asynccontextmanager
async def _genl(netns: str | None) -> AsyncIterator[AsyncWireGuard]:
    sock = await genl_socket_in(netns)
    wg = AsyncWireGuard(use_socket=sock)
    try:
        await wg.setup_endpoint()
        yield wg
    finally:
        wg.close()
        sock.close()


async def _add_wireguard_link(ifname: str, netns: Netns) -> None:
    sock = await netlink_socket_in(netns)
    ipr = AsyncIPRoute(use_socket=sock)
    try:
        await ipr.link("add", ifname=ifname, kind="wireguard")
    except NetlinkError as exc:
        raise _netlink_error(f"creating wireguard link {ifname}", exc) from None
    finally:
        ipr.close()
        sock.close()


def _netlink_error(what: str, exc: NetlinkError) -> DataplaneError:
    return DataplaneError(f"{what} failed: netlink error {exc.code} ({os.strerror(exc.code)})")


def peer_request(peer: WgPeer) -> dict[str, Any]:
    """pyroute2's peer structure that makes the kernel's peer match ``peer`` exactly."""
    request: dict[str, Any] = {
        "public_key": peer.public_key,
        "persistent_keepalive": peer.keepalive or 0,
        "replace_allowed_ips": True,
        "allowed_ips": list(peer.allowed_ips),
    }
    if peer.endpoint is not None:
        request["endpoint_addr"], request["endpoint_port"] = peer.endpoint
    return request


def allowed_ips_request(public_key: str, prefixes: Iterable[str]) -> dict[str, Any]:
    """pyroute2's peer structure that adds ``prefixes`` to an existing peer's allowed IPs and
    changes nothing else (no keepalive, no endpoint, no replace; never makes the peer)."""
    return {"public_key": public_key, "update_only": True, "allowed_ips": list(prefixes)}


def _text(value: object) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def parse_info(messages: Iterable[Any]) -> tuple[int, list[WgPeerStats]]:
    """Listen port and per-peer stats from the messages of a WG_CMD_GET_DEVICE dump."""
    port = 0
    stats: list[WgPeerStats] = []
    for msg in messages:
        port = msg.get_attr("WGDEVICE_A_LISTEN_PORT") or port
        for peer in msg.get_attr("WGDEVICE_A_PEERS") or []:
            handshake = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME") or {}
            sec, nsec = handshake.get("tv_sec", 0), handshake.get("tv_nsec", 0)
            key = base64.b64encode(base64.b64decode(_text(peer.get_attr("WGPEER_A_PUBLIC_KEY"))))
            stats.append(
                WgPeerStats(
                    public_key=key.decode("ascii"),
                    rx_bytes=int(peer.get_attr("WGPEER_A_RX_BYTES") or 0),
                    tx_bytes=int(peer.get_attr("WGPEER_A_TX_BYTES") or 0),
                    last_handshake=sec + nsec / 1e9 if (sec or nsec) else None,
                )
            )
    return port, stats


class KernelBackend:
    """:class:`WireGuardBackend` on the Linux kernel module."""

    kind = "kernel"
    tun_in_netns = False

    def __init__(self, kernel: KernelPort | None = None) -> None:
        self.kernel = kernel or real_kernel()
        self._netns: dict[str, Netns] = {}  # ifname -> namespace the link is in now

    async def create(
        self,
        ifname: str,
        underlay_netns: str | None,
        private_key: str,
        listen_port: int,
        mtu: int | None = None,
        netns: str | None = None,
        alias: str | None = None,
    ) -> int:
        key = validate_create(ifname, underlay_netns, private_key, listen_port)
        if ifname in self._netns:
            raise AlreadyExists(f"ifname: wireguard interface {ifname} already exists")
        await _add_wireguard_link(ifname, underlay_netns)
        try:
            async with _genl(underlay_netns) as wg:
                await wg.set(ifname, private_key=key.reveal(), listen_port=listen_port)
                port, _ = parse_info([m async for m in await wg.info(ifname)])
        except NetlinkError as exc:
            await self._delete_link(ifname, underlay_netns)
            raise _netlink_error(f"configuring wireguard {ifname}", exc) from None
        except BaseException:
            await self._delete_link(ifname, underlay_netns)
            raise
        self._netns[ifname] = underlay_netns
        log.info("wireguard_created", ifname=ifname, backend=self.kind, listen_port=port)
        return port

    async def move(self, ifname: str, underlay_netns: str | None, target_netns: str) -> None:
        source = self._where(ifname)
        check_netns(target_netns, "target_netns")
        if source == target_netns:
            return
        await self.kernel.move_link(source, ifname, target_netns)
        self._netns[ifname] = target_netns
        log.info("wireguard_moved", ifname=ifname, netns=target_netns)

    async def set_peer(self, ifname: str, peer: WgPeer) -> None:
        peer = validate_peer(peer)
        await self._set(ifname, peer_request(peer), "setting a peer")
        log.info("wireguard_peer_set", ifname=ifname, peer=peer.public_key)

    async def add_allowed_ips(
        self, ifname: str, public_key: str, prefixes: tuple[str, ...]
    ) -> None:
        added = validate_peer(WgPeer(public_key, None, prefixes)).allowed_ips
        await self._set(ifname, allowed_ips_request(public_key, added), "adding allowed IPs")

    async def remove_peer(self, ifname: str, public_key: str) -> None:
        public_key = parse_public_key(public_key)
        await self._set(ifname, {"public_key": public_key, "remove": True}, "removing a peer")
        log.info("wireguard_peer_removed", ifname=ifname, peer=public_key)

    async def stats(self, ifname: str) -> list[WgPeerStats]:
        netns = self._where(ifname)
        try:
            async with _genl(netns) as wg:
                _, stats = parse_info([m async for m in await wg.info(ifname)])
        except NetlinkError as exc:
            raise _netlink_error(f"reading wireguard {ifname}", exc) from None
        return stats

    async def delete(self, ifname: str) -> None:
        validate_ifname(ifname)
        await self._delete_link(ifname, self._netns.pop(ifname, None))
        log.info("wireguard_deleted", ifname=ifname)

    async def reap(self, ifnames: Collection[str]) -> None:
        """Nothing: a kernel device leaves nothing behind its link."""
        for ifname in ifnames:
            validate_ifname(ifname)

    async def retire(self, ifname: str, netns: str, current: str) -> None:
        """Deleted: a kernel device costs nothing worth keeping."""
        await self.delete(ifname)

    def baseline(self, ifname: str) -> LinkStats | None:
        return None

    async def _delete_link(self, ifname: str, netns: Netns) -> None:
        with contextlib.suppress(NotFound):  # already gone (or its namespace is)
            await self.kernel.delete_link(netns, ifname)

    def _where(self, ifname: str) -> Netns:
        validate_ifname(ifname)
        try:
            return self._netns[ifname]
        except KeyError:
            raise NotFound(
                f"wireguard interface {ifname} is not managed by this forwarder"
            ) from None

    async def _set(self, ifname: str, peer: dict[str, Any], what: str) -> None:
        netns = self._where(ifname)
        try:
            async with _genl(netns) as wg:
                await wg.set(ifname, peer=peer)
        except NetlinkError as exc:
            raise _netlink_error(f"{what} on wireguard {ifname}", exc) from None
