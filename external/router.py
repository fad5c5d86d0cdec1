"""One external host's router namespace: a WireGuard device with the host as its only peer,
the vWire's interface, and forwarding between them.

Contract:

* :meth:`Router.sweep` deletes every namespace with the routers' prefix (a killed router's
  leftovers), before a router serves anything.
* :meth:`Router.create` makes the namespace ``netns`` (an old one of that name, left by a crash,
  is deleted first) with forwarding on.
* :meth:`Router.wireguard` makes device ``ifname`` in the public namespace (``public_netns``, a
  namespace file; default: the calling process's own), so its UDP socket listens on the node's
  public side, then moves the link into the router namespace
  (the socket stays): the kernel module when ``ip link add type wireguard`` works, otherwise a
  ``wireguard-go -f`` child process. It is configured with ``wg set`` (private key through
  stdin, never on a command line), the host as the only peer.
* :meth:`Router.route` gives the host **stable** addresses: the host's own and the service's,
  which its exported file names, are mapped 1:1 onto the vWire's client and endpoint addresses
  by stateless nftables rewriting in the router namespace (from the host: destination service
  → endpoint, source host → client; from the vWire: destination client → host, source
  endpoint → service). So a vWire rebuilt with new addresses (a heal, a router
  restart) only changes the rules, never the host's file. The host's addresses are routed to
  the WireGuard device and are the peer's allowed IPs.
* :meth:`Router.route_server` (a served host instead): the host's tunnel address through the
  WireGuard device, and the peer's allowed IPs set to it.
* :meth:`Router.delete` deletes the namespace (the WireGuard link with it: traffic stops at
  once), then stops a wireguard-go child (SIGTERM, SIGKILL after ``stop_timeout``). It is
  idempotent and safe after a failed ``create``; nothing is left behind.
Every failed command raises :class:`sdk.errors.DataplaneError` with the command and its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from external.state import WgKey
from sdk.errors import DataplaneError
from sdk.grpcutil import unix_socket_accepts

log = structlog.get_logger("external.router")

WG_SOCKET_DIR = Path("/var/run/wireguard")


async def run(*cmd: str, stdin: str | None = None, check: bool = True) -> str:
    """Run a command; its stdout, or DataplaneError naming it with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if check and proc.returncode != 0:
        shown = " ".join(cmd)
        raise DataplaneError(f"`{shown}` failed: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


@dataclass(frozen=True)
class NatPair:
    """One address family's 1:1 mapping: the host's and the service's stable addresses (what
    the host's file names) and the vWire's client and endpoint addresses (what the fabric
    gave). All ``ip/32`` or ``ip/128``."""

    host: str
    service: str
    vwire_client: str
    vwire_endpoint: str


def nat_rules(pairs: Sequence[NatPair], wg: str, vwire: str) -> str:
    """The router namespace's whole nftables ruleset (``flush ruleset`` first: atomic).
    Stateless rewriting (no conntrack NAT), so a new mapping applies to the very next packet,
    also of flows that were open before a heal."""
    pre, post = [], []
    for pair in pairs:
        fam = "ip6" if ":" in pair.host else "ip"
        host, service, client, endpoint = (
            str(ipaddress.ip_interface(a).ip)
            for a in (pair.host, pair.service, pair.vwire_client, pair.vwire_endpoint))
        pre += [f'iifname "{wg}" {fam} daddr {service} {fam} daddr set {endpoint}',
                f'iifname "{vwire}" {fam} daddr {client} {fam} daddr set {host}']
        post += [f'oifname "{vwire}" {fam} saddr {host} {fam} saddr set {client}',
                 f'oifname "{wg}" {fam} saddr {endpoint} {fam} saddr set {service}']
    return "\n".join([
        "flush ruleset", "table inet external {",
        "  chain pre { type filter hook prerouting priority raw; policy accept;",
        *(f"    {rule}" for rule in pre), "  }",
        "  chain post { type filter hook postrouting priority srcnat; policy accept;",
        *(f"    {rule}" for rule in post), "  }", "}", ""])


def _family(cidr: str) -> str:
    return "-6" if ipaddress.ip_interface(cidr).version == 6 else "-4"


class Router:
    """See the module docstring."""

    def __init__(self, netns: str, ifname: str, vwire_interface: str, *,
                 public_netns: str = "", wireguard_go: str = "wireguard-go",
                 start_timeout: float = 5.0, stop_timeout: float = 3.0) -> None:
        self.netns = netns
        self.ifname = ifname
        self.vwire_interface = vwire_interface
        self.public_netns = public_netns
        self.wireguard_go = wireguard_go
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.backend = ""
        self.peer_key = ""
        self._daemon: asyncio.subprocess.Process | None = None

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"

    def _ip(self, *args: str) -> list[str]:
        return ["ip", "-n", self.netns, *args]

    def _public(self, *args: str) -> list[str]:
        """A command in the public namespace (only its network namespace is entered, so named
        namespaces stay visible)."""
        return ["nsenter", f"--net={self.public_netns}", *args] if self.public_netns else list(args)

    def _in(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *args]

    @staticmethod
    async def sweep(prefix: str) -> list[str]:
        """Delete every namespace named ``prefix...`` (what a killed router left); returns them.
        Their WireGuard links go with them, and wireguard-go exits when its link is gone."""
        listed = await run("ip", "netns", "list")
        stale = [line.split()[0] for line in listed.splitlines()
                 if line.split() and line.split()[0].startswith(prefix)]
        for name in stale:
            await run("ip", "netns", "del", name, check=False)
        if stale:
            log.info("external_routers_swept", namespaces=stale)
        return stale

    async def create(self) -> None:
        await run("ip", "netns", "del", self.netns, check=False)
        await run("ip", "netns", "add", self.netns)
        await run(*self._ip("link", "set", "lo", "up"))
        await run(*self._in("sysctl", "-qw", "net.ipv4.ip_forward=1",
                            "net.ipv6.conf.all.forwarding=1"))

    async def wireguard(self, key: WgKey, port: int, peer_key: str, mtu: int) -> None:
        if await self._kernel_device():
            self.backend = "kernel"
        else:
            await self._start_daemon()
            self.backend = "wireguard-go"
        await run(*self._public("ip", "link", "set", self.ifname, "netns", self.netns))
        self.peer_key = peer_key
        await run(*self._in("wg", "set", self.ifname, "listen-port", str(port),
                            "private-key", "/dev/stdin", "peer", peer_key),
                  stdin=key.reveal() + "\n")
        await run(*self._ip("link", "set", self.ifname, "mtu", str(mtu), "up"))
        log.info("external_wireguard_up", netns=self.netns, ifname=self.ifname,
                 backend=self.backend, port=port)

    async def _kernel_device(self) -> bool:
        try:
            await run(*self._public("ip", "link", "add", self.ifname, "type", "wireguard"))
        except DataplaneError:
            return False
        return True

    async def _old_daemon_gone(self, socket: Path) -> None:
        """A wireguard-go of this name from before (its namespace was just swept) must exit
        before a new one can take the name: wait for it (bounded), unlink a dead socket."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        while socket.exists():
            if not unix_socket_accepts(socket):
                socket.unlink(missing_ok=True)
                return
            if loop.time() > deadline:
                raise DataplaneError(f"a wireguard-go for {self.ifname} still runs: stop it")
            await asyncio.sleep(0.05)  # bounded wait for the old daemon's exit

    async def _start_daemon(self) -> None:
        socket = WG_SOCKET_DIR / f"{self.ifname}.sock"
        await self._old_daemon_gone(socket)
        self._daemon = await asyncio.create_subprocess_exec(
            *self._public(self.wireguard_go, "-f", self.ifname), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        delay = 0.005
        while not socket.exists():  # bounded poll for the daemon's own control socket
            if self._daemon.returncode is not None or loop.time() > deadline:
                raise DataplaneError(
                    f"wireguard-go for {self.ifname} did not start within {self.start_timeout} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._daemon.wait(), delay)
            delay = min(delay * 2, 0.1)

    async def route(self, pairs: Sequence[NatPair]) -> None:
        """Route the host's stable addresses to the WireGuard device (the peer's allowed IPs)
        and map them 1:1 onto the vWire's (see the module docstring); replaces what an earlier
        call set, atomically for the NAT rules."""
        hosts = [pair.host for pair in pairs]
        for cidr in hosts:
            await run(*self._ip(_family(cidr), "route", "replace", cidr, "dev", self.ifname))
        await run(*self._in("wg", "set", self.ifname, "peer", self.peer_key, "allowed-ips",
                            ",".join(hosts)))
        await run(*self._in("nft", "-f", "-"), stdin=nat_rules(pairs, self.ifname,
                                                                   self.vwire_interface))

    async def route_server(self, address: str) -> None:
        """A served host: its tunnel ``address`` is reached through the WireGuard device (the
        vWires' client addresses are routed back by the forwarder's own routes)."""
        await run(*self._ip(_family(address), "route", "replace", address, "dev", self.ifname))
        await run(*self._in("wg", "set", self.ifname, "peer", self.peer_key, "allowed-ips",
                            address))

    async def delete(self) -> None:
        await run("ip", "netns", "del", self.netns, check=False)
        with contextlib.suppress(DataplaneError):  # a kernel device never moved in
            await run(*self._public("ip", "link", "del", self.ifname), check=False)
        daemon, self._daemon = self._daemon, None
        if daemon is not None and daemon.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                daemon.terminate()
            try:
                await asyncio.wait_for(daemon.wait(), self.stop_timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    daemon.kill()
                await daemon.wait()
        (WG_SOCKET_DIR / f"{self.ifname}.sock").unlink(missing_ok=True)
        log.info("external_router_deleted", netns=self.netns)
