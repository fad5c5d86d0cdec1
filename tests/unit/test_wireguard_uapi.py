"""Our UAPI client: message formatting, reply parsing, and errors against an in-test server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from forwarder.wireguard import WgPeer, generate_keypair
from forwarder.wireguard.keys import b64_to_hex, parse_private_key
from forwarder.wireguard.uapi import (
    UapiClient,
    UapiError,
    device_lines,
    encode_set,
    parse_device,
    parse_reply,
    peer_lines,
    removal_lines,
)
from sdk.errors import DataplaneError, NotFound, Unavailable

PUB = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
PUB_HEX = b64_to_hex(PUB)


def test_peer_lines_ipv4_endpoint_keepalive_and_exact_allowed_ips() -> None:
    peer = WgPeer(PUB, ("192.0.2.2", 51820), ("10.0.0.2/32", "fd00::2/128"), keepalive=25)
    assert peer_lines(peer) == [
        f"public_key={PUB_HEX}",
        "endpoint=192.0.2.2:51820",
        "persistent_keepalive_interval=25",
        "replace_allowed_ips=true",
        "allowed_ip=10.0.0.2/32",
        "allowed_ip=fd00::2/128",
    ]


def test_peer_lines_ipv6_endpoint_in_brackets_and_no_endpoint() -> None:
    v6 = peer_lines(WgPeer(PUB, ("fd00:0:1::2", 443), ()))
    assert "endpoint=[fd00:0:1::2]:443" in v6
    assert "persistent_keepalive_interval=0" in v6  # None means off
    bare = peer_lines(WgPeer(PUB, None, ("10.0.0.0/24",)))
    assert not any(line.startswith("endpoint=") for line in bare)


def test_set_requests_never_replace_peers_and_are_blank_line_terminated() -> None:
    private = parse_private_key(generate_keypair()[0])
    request = encode_set(
        [*device_lines(private, 0), *peer_lines(WgPeer(PUB, None, ())), *removal_lines(PUB)]
    )
    text = request.decode()
    assert text.startswith("set=1\nprivate_key=") and text.endswith("\n\n")
    assert text.count("\n\n") == 1
    assert "replace_peers" not in text
    assert f"private_key={b64_to_hex(private)}\nlisten_port=0\n" in text
    assert text.endswith(f"public_key={PUB_HEX}\nremove=true\n\n")


GET_REPLY = (
    "private_key=e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a\n"
    "listen_port=12912\n"
    f"public_key={PUB_HEX}\n"
    "preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n"
    "protocol_version=1\n"
    "endpoint=[abcd:23::33%2]:51820\n"
    "last_handshake_time_sec=1700000000\n"
    "last_handshake_time_nsec=500000000\n"
    "tx_bytes=38333\n"
    "rx_bytes=2224\n"
    "persistent_keepalive_interval=0\n"
    "allowed_ip=192.168.4.4/32\n"
    "allowed_ip=fd00::4/128\n"
    f"public_key={b64_to_hex(generate_keypair()[1])}\n"
    "endpoint=182.122.22.19:3233\n"
    "last_handshake_time_sec=0\n"
    "last_handshake_time_nsec=0\n"
    "tx_bytes=0\n"
    "rx_bytes=0\n"
    "persistent_keepalive_interval=111\n"
    "future_key=ignored\n"
    "errno=0\n"
    "\n"
)


def test_parse_get_reply_into_device_and_stats() -> None:
    pairs, err = parse_reply(GET_REPLY)
    assert err == 0
    device = parse_device(pairs)
    assert device.listen_port == 12912
    first, second = device.peers
    assert first.public_key == PUB
    assert first.endpoint == ("abcd:23::33%2", 51820)
    assert first.allowed_ips == ["192.168.4.4/32", "fd00::4/128"]
    stats = first.stats()
    assert (stats.rx_bytes, stats.tx_bytes) == (2224, 38333)
    assert stats.last_handshake == pytest.approx(1700000000.5)
    assert second.stats().last_handshake is None
    assert second.keepalive == 111 and second.endpoint == ("182.122.22.19", 3233)
    assert not hasattr(device, "private_key")


def test_parse_reply_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="no errno"):
        parse_reply("listen_port=1\n\n")
    with pytest.raises(ValueError, match="malformed"):
        parse_reply("what\nerrno=0\n\n")


Handler = Callable[[bytes], bytes | None]


class FakeDaemon:
    """A tiny UAPI server: records each request and answers with ``handler(request)``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\n\n")
        self.requests.append(request)
        reply = self.handler(request)
        if reply is None:  # hang: never answer
            await reader.read()
        else:
            writer.write(reply)
            await writer.drain()
        writer.close()


async def serve(tmp_path: Path, ifname: str, handler: Handler) -> tuple[FakeDaemon, asyncio.Server]:
    """Start a :class:`FakeDaemon` on ``tmp_path/IFNAME.sock``."""
    fake = FakeDaemon(handler)
    server = await asyncio.start_unix_server(fake.serve, path=str(tmp_path / f"{ifname}.sock"))
    return fake, server


async def test_client_set_and_get_against_fake_daemon(tmp_path: Path) -> None:
    def handler(request: bytes) -> bytes:
        return GET_REPLY.encode() if request.startswith(b"get=1") else b"errno=0\n\n"

    fake, server = await serve(tmp_path, "wgu0", handler)
    async with server:
        client = UapiClient("wgu0", tmp_path)
        await client.set(peer_lines(WgPeer(PUB, None, ("10.0.0.2/32",))))
        device = await client.get()
    assert fake.requests[0] == encode_set(peer_lines(WgPeer(PUB, None, ("10.0.0.2/32",))))
    assert fake.requests[1] == b"get=1\n\n"
    assert device.listen_port == 12912 and len(device.peers) == 2


async def test_errno_reply_raises_with_errno_and_no_key(tmp_path: Path) -> None:
    fake, server = await serve(tmp_path, "wgu1", lambda _r: b"errno=98\n\n")
    private = parse_private_key(generate_keypair()[0])
    async with server:
        with pytest.raises(UapiError) as caught:
            await UapiClient("wgu1", tmp_path).set(device_lines(private, 51820))
    assert caught.value.errno == 98
    assert isinstance(caught.value, DataplaneError)
    assert "errno=98 (EADDRINUSE" in str(caught.value)
    assert b64_to_hex(private) not in str(caught.value)
    assert b64_to_hex(private).encode() in fake.requests[0]


async def test_missing_stale_hung_and_garbage_daemons(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no UAPI socket"):
        await UapiClient("absent", tmp_path).get()

    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "stale.sock"))  # bound, never listening: ECONNREFUSED
    try:
        with pytest.raises(Unavailable, match="refuses connections"):
            await UapiClient("stale", tmp_path).get()
    finally:
        stale.close()

    _, hung = await serve(tmp_path, "hung", lambda _r: None)
    async with hung:
        with pytest.raises(Unavailable, match="timed out"):
            await UapiClient("hung", tmp_path, timeout=0.2).get()
        hung.close()

    _, garbage = await serve(tmp_path, "junk", lambda _r: b"nonsense\n\n")
    async with garbage:
        with pytest.raises(DataplaneError, match="bad reply"):
            await UapiClient("junk", tmp_path).get()
