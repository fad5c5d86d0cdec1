"""Local vWires on real namespaces: ping (IPv4/IPv6), TCP, MTU, isolation, rollback, close, sweep.

Traffic only ever flows between namespaces these tests create. Helpers used by the remote
tests too live here (ping, TCP echo, state dumps).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from forwarder.kernel import Address, KernelPort, Route, real_kernel
from forwarder.vwire import (
    Attachment,
    LocalVWireSpec,
    RouteSpec,
    VWire,
    find_leftovers,
    program_local,
    sweep,
)
from sdk.errors import DataplaneError, FabricError

from .conftest import netns_path, run

# Sends one ICMP echo with "don't fragment" (IPv4) / no fragmentation (IPv6) and a marker
# payload, waits for the matching reply; prints ok / EMSGSIZE / timeout. Retries within 5 s
# (the first packet may race neighbour discovery); never sleeps.
_PING = r"""
import os, socket, struct, sys, time
dst, size = sys.argv[1], int(sys.argv[2])
v6 = ":" in dst
fam = socket.AF_INET6 if v6 else socket.AF_INET
proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
s = socket.socket(fam, socket.SOCK_RAW, proto)
if v6:
    s.setsockopt(socket.IPPROTO_IPV6, 23, 2)  # IPV6_MTU_DISCOVER = IPV6_PMTUDISC_DO
else:
    s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
payload = (b"VWIRE-PLAINTEXT-MARKER" * (size // 22 + 1))[:size]
ident = os.getpid() & 0xFFFF
def packet(seq):
    kind = 128 if v6 else 8
    head = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    if v6:
        return head + payload  # the kernel fills in the ICMPv6 checksum
    data = head + payload
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return struct.pack("!BBHHH", kind, 0, ~total & 0xFFFF, ident, seq) + payload
deadline = time.monotonic() + 5
seq = 0
while time.monotonic() < deadline:
    seq += 1
    try:
        s.sendto(packet(seq), (dst, 0))
    except OSError as err:
        print("EMSGSIZE" if err.errno == 90 else "error %s" % err.errno)
        sys.exit(0)
    s.settimeout(0.5)
    try:
        while True:
            data, _ = s.recvfrom(65535)
            icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
            kind, _, _, rid, _ = struct.unpack("!BBHHH", icmp[:8])
            if kind == (129 if v6 else 0) and rid == ident:
                print("ok")
                sys.exit(0)
    except socket.timeout:
        continue
print("timeout")
"""

_TCP_SERVER = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
srv = socket.socket(fam, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 5001))
srv.listen(1)
srv.settimeout(10)
print("ready", flush=True)
conn, _ = srv.accept()
conn.settimeout(10)
data = b""
while not data.endswith(b"\n"):
    data += conn.recv(65536)
conn.sendall(data.upper())
conn.close()
"""

_TCP_CLIENT = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
c = socket.create_connection((sys.argv[1], 5001), timeout=10)
c.sendall(b"hello over the vwire" * 1000 + b"\n")
data = b""
while not data.endswith(b"\n"):
    data += c.recv(65536)
print("ok" if data == (b"HELLO OVER THE VWIRE" * 1000 + b"\n") else "bad")
"""


def ping(ns: str, dst: str, size: int = 56) -> str:
    """ok / EMSGSIZE / timeout for one DF echo of ``size`` payload bytes from namespace ``ns``."""
    return run(sys.executable, "-c", _PING, dst, str(size), netns=ns).stdout.strip()


def tcp_echo(server_ns: str, client_ns: str, server_ip: str) -> str:
    """Run a one-shot TCP echo server in ``server_ns`` and a client in ``client_ns``."""
    cmd = ["ip", "netns", "exec", server_ns, sys.executable, "-c", _TCP_SERVER, server_ip]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            assert server.stdout.readline().strip() == "ready"
            return run(sys.executable, "-c", _TCP_CLIENT, server_ip, netns=client_ns).stdout.strip()
        finally:
            server.wait(timeout=15)


def kernel_state(*names: str) -> dict[str, str]:
    """Links, addresses, routes (v4+v6) and rules of each namespace, as ``ip`` prints them."""
    state = {}
    for name in names:
        parts = [
            run("ip", "-d", "-o", "link", netns=name).stdout,
            run("ip", "-o", "addr", netns=name).stdout,
            run("ip", "route", "show", "table", "all", netns=name).stdout,
            run("ip", "-6", "route", "show", "table", "all", netns=name).stdout,
            run("ip", "rule", netns=name).stdout,
            run("ip", "-6", "rule", netns=name).stdout,
        ]
        state[name] = "\n".join(parts)
    return state


def local_spec(cid: str, client: str, endpoint: str, **extra: Any) -> LocalVWireSpec:
    return LocalVWireSpec(
        connection_id=cid,
        client=Attachment(
            netns_path(client),
            "nsm0",
            ("172.16.0.1/32", "fd10::1/128"),
            (RouteSpec("172.20.0.0/16"), RouteSpec("fd20::/64")),
        ),
        endpoint=Attachment(
            f"file://{netns_path(endpoint)}",
            "nse0",
            ("172.16.0.2/32", "fd10::2/128"),
            (RouteSpec("172.30.0.0/16"),),
        ),
        **extra,
    )


async def test_local_vwire_carries_ipv4_ipv6_and_tcp(netns: Callable[[str], str]) -> None:
    client, endpoint = netns("cli"), netns("nse")
    vwire = await program_local(real_kernel(), local_spec("conn-l1", client, endpoint))
    try:
        assert ping(client, "172.16.0.2") == "ok"
        assert ping(client, "fd10::2") == "ok"
        assert ping(endpoint, "172.16.0.1") == "ok"
        assert tcp_echo(endpoint, client, "172.16.0.2") == "ok"
        assert tcp_echo(endpoint, client, "fd10::2") == "ok"
        metrics = await vwire.metrics()
        assert int(metrics["client_tx_bytes"]) > 20_000
        assert int(metrics["endpoint_rx_packets"]) > 0
    finally:
        await vwire.close()


async def test_mtu_df_ping_passes_and_too_big_is_refused(netns: Callable[[str], str]) -> None:
    client, endpoint = netns("cli"), netns("nse")
    vwire = await program_local(real_kernel(), local_spec("conn-mtu", client, endpoint))
    try:
        assert vwire.mtu == 1500
        assert "mtu 1500" in run("ip", "link", "show", "nsm0", netns=client).stdout
        assert ping(client, "172.16.0.2", 1400) == "ok"
        assert ping(client, "172.16.0.2", 1600) == "EMSGSIZE"
        assert ping(client, "fd10::2", 1600) == "EMSGSIZE"
    finally:
        await vwire.close()
    client2, endpoint2 = netns("cli"), netns("nse")
    small = await program_local(
        real_kernel(), local_spec("conn-mtu2", client2, endpoint2, mtu=1300)
    )
    try:
        assert "mtu 1300" in run("ip", "link", "show", "nse0", netns=endpoint2).stdout
        assert ping(client2, "172.16.0.2", 1200) == "ok"
        assert ping(client2, "172.16.0.2", 1400) == "EMSGSIZE"
    finally:
        await small.close()


async def test_overlapping_addresses_both_work(netns: Callable[[str], str]) -> None:
    kernel = real_kernel()
    pairs = [(netns("cli"), netns("nse")) for _ in range(2)]
    vwires = [
        await program_local(kernel, local_spec(f"conn-ov{i}", c, e))
        for i, (c, e) in enumerate(pairs)
    ]
    try:
        for client, _ in pairs:
            assert ping(client, "172.16.0.2") == "ok"
            assert ping(client, "fd10::2") == "ok"
        await vwires[0].close()
        assert ping(pairs[1][0], "172.16.0.2") == "ok"
    finally:
        for vwire in vwires:
            await vwire.close()


async def test_close_removes_everything(netns: Callable[[str], str]) -> None:
    client, endpoint = netns("cli"), netns("nse")
    before = kernel_state(client, endpoint)
    vwire = await program_local(real_kernel(), local_spec("conn-close", client, endpoint))
    assert kernel_state(client, endpoint) != before
    await vwire.close()
    await vwire.close()
    assert kernel_state(client, endpoint) == before


_ENTRIES = {"add_address": Address, "add_route": Route}
POISON = Route("192.0.2.0/24", "injected0")  # the kernel refuses it: no such device


class FailingKernel:
    """A real kernel port whose ``method`` fails on its ``nth`` call (failure injection). An
    address or route added through ``add_all`` counts as a call of ``add_address`` or
    ``add_route``: the nth is preceded by :data:`POISON`, so the real port's ``add_all`` fails
    there after adding the entries before it, and takes them back itself."""

    def __init__(self, inner: KernelPort, method: str, nth: int) -> None:
        self._inner, self._method, self._left = inner, method, nth

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name == "add_all" and self._method in _ENTRIES:
            return partial(self._add_all, target, _ENTRIES[self._method])
        if name != self._method:
            return target

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            self._left -= 1
            if self._left == 0:
                raise DataplaneError(f"injected failure in {name}")
            return await target(*args, **kwargs)

        return wrapped

    async def _add_all(self, target: Any, kind: type, netns: Any, entries: Any) -> None:
        entries = list(entries)
        for i, entry in enumerate(entries):
            if isinstance(entry, kind):
                self._left -= 1
                if self._left == 0:
                    entries.insert(i, POISON)
                    break
        await target(netns, entries)


@pytest.mark.parametrize(("method", "nth"), [("add_address", 3), ("add_route", 5), ("set_link", 2)])
async def test_failure_mid_programming_leaves_nothing(
    netns: Callable[[str], str], method: str, nth: int
) -> None:
    client, endpoint = netns("cli"), netns("nse")
    before = kernel_state(client, endpoint)
    failing: Any = FailingKernel(real_kernel(), method, nth)
    with pytest.raises(FabricError, match="injected"):
        await program_local(failing, local_spec("conn-fail", client, endpoint))
    assert kernel_state(client, endpoint) == before


async def test_sweep_removes_what_a_crashed_run_left(netns: Callable[[str], str]) -> None:
    kernel = real_kernel()
    client, endpoint = netns("cli"), netns("nse")
    scope = [netns_path(client), netns_path(endpoint)]
    before = kernel_state(client, endpoint)
    await program_local(kernel, local_spec("conn-crashed", client, endpoint))  # handle lost
    leftovers = await find_leftovers(kernel, scope)
    assert {(x.ifname, x.connection_id) for x in leftovers} == {
        ("nsm0", "conn-crashed"),
        ("nse0", "conn-crashed"),
    }
    removed = await sweep(kernel, namespaces=scope)
    assert {x.connection_id for x in removed} == {"conn-crashed"}
    assert kernel_state(client, endpoint) == before
    # A fresh run can program the same connection again.
    again: VWire = await program_local(kernel, local_spec("conn-crashed", client, endpoint))
    await again.close()

