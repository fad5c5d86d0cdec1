"""Backend selection, peer validation, the kernel backend's pure parts, and early refusals."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic.wireguard import wgmsg

import forwarder.kernel.wireguard as kernel_mod
from forwarder.kernel import FakeKernel
from forwarder.kernel.wireguard import (
    KernelBackend,
    allowed_ips_request,
    kernel_wireguard_available,
    parse_info,
    peer_request,
)
from forwarder.wireguard import (
    UserspaceBackend,
    WgPeer,
    describe,
    detect_backend,
    generate_keypair,
)
from forwarder.wireguard.model import validate_ifname, validate_peer
from sdk.errors import FailedPrecondition, InvalidArgument, NotFound

PUB = generate_keypair()[1]


@pytest.mark.parametrize(
    ("peer", "field"),
    [
        (WgPeer("nope", None, ()), "peer.public_key"),
        (WgPeer(PUB, ("example.com", 51820), ()), "peer.endpoint"),
        (WgPeer(PUB, ("192.0.2.1", 0), ()), "peer.endpoint"),
        (WgPeer(PUB, None, ("10.0.0.1",)), "peer.allowed_ips"),
        (WgPeer(PUB, None, ("10.0.0.0/33",)), "peer.allowed_ips"),
        (WgPeer(PUB, None, "10.0.0.0/8"), "peer.allowed_ips"),  # type: ignore[arg-type]
        (WgPeer(PUB, None, (), keepalive=-1), "peer.keepalive"),
    ],
)
def test_validate_peer_rejects_before_anything_is_sent(peer: WgPeer, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_peer(peer)
    assert caught.value.field == field


def test_validate_peer_canonicalises_key_and_accepts_ipv6() -> None:
    raw = base64.b64decode(PUB)
    unpadded_equal = base64.b64encode(raw).decode()
    peer = validate_peer(WgPeer(unpadded_equal, ("fd00::1", 51820), ("::/0",), keepalive=0))
    assert peer.public_key == PUB


@pytest.mark.parametrize("name", ["", "x" * 16, "../etc", "wg 0", "-wg", 7])
def test_validate_ifname(name: object) -> None:
    with pytest.raises(InvalidArgument, match="ifname"):
        validate_ifname(name)


async def test_real_probe_agrees_with_the_kernel() -> None:
    available = await kernel_wireguard_available()
    assert available == os.path.isdir("/sys/module/wireguard")


async def test_probe_maps_netlink_error_to_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    class Missing:
        def __init__(self) -> None:
            raise NetlinkError(2, "No such file or directory")

    class Present:
        def close(self) -> None:
            pass

    monkeypatch.setattr(kernel_mod, "WireGuard", Missing)
    assert await kernel_wireguard_available() is False
    monkeypatch.setattr(kernel_mod, "WireGuard", Present)
    assert await kernel_wireguard_available() is True


async def _yes() -> bool:
    return True


async def _no() -> bool:
    return False


async def test_detect_prefers_kernel_then_wireguard_go(tmp_path: Path) -> None:
    assert isinstance(await detect_backend(kernel_probe=_yes), KernelBackend)
    chosen = await detect_backend(kernel_probe=_no)
    assert isinstance(chosen, UserspaceBackend) and chosen.kind == "wireguard-go"
    forced = await detect_backend("wireguard-go", kernel_probe=_yes)
    assert isinstance(forced, UserspaceBackend)
    with pytest.raises(FailedPrecondition, match="wireguard-go"):
        await detect_backend(kernel_probe=_no, binary=str(tmp_path / "missing"))
    with pytest.raises(FailedPrecondition, match="modprobe"):
        await detect_backend("kernel", kernel_probe=_no)
    with pytest.raises(InvalidArgument):
        await detect_backend("vpp", kernel_probe=_no)  # type: ignore[arg-type]


async def test_describe_reports_kind_and_version(tmp_path: Path) -> None:
    fake = tmp_path / "wireguard-go"
    fake.write_text("#!/bin/sh\necho 'wireguard-go v0.0.20220316'\necho\necho 'Userspace...'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    info = await describe(UserspaceBackend(binary=str(fake), kernel=FakeKernel()))
    assert (info.kind, info.version, info.binary) == ("wireguard-go", "v0.0.20220316", str(fake))
    kinfo = await describe(KernelBackend(kernel=FakeKernel()))
    assert kinfo.kind == "kernel" and kinfo.version == f"linux {os.uname().release}"


def test_kernel_peer_request_matches_peer_exactly() -> None:
    peer = WgPeer(PUB, ("fd00::2", 51820), ("10.0.0.2/32",), keepalive=None)
    assert peer_request(peer) == {
        "public_key": PUB,
        "persistent_keepalive": 0,
        "replace_allowed_ips": True,
        "allowed_ips": ["10.0.0.2/32"],
        "endpoint_addr": "fd00::2",
        "endpoint_port": 51820,
    }
    assert "endpoint_addr" not in peer_request(WgPeer(PUB, None, ()))


def _decoded(attrs: list[object]) -> wgmsg:
    msg = wgmsg()
    msg["cmd"], msg["version"], msg["attrs"] = 0, 1, attrs
    msg.encode()
    out = wgmsg(msg.data)
    out.decode()
    return out


def test_kernel_parse_info_through_pyroute2s_real_codec() -> None:
    other = generate_keypair()[1]
    first = _decoded(
        [
            ["WGDEVICE_A_IFNAME", "wg0"],
            ["WGDEVICE_A_LISTEN_PORT", 51820],
            [
                "WGDEVICE_A_PEERS",
                [
                    {
                        "attrs": [
                            ["WGPEER_A_PUBLIC_KEY", PUB],
                            ["WGPEER_A_RX_BYTES", 10],
                            ["WGPEER_A_TX_BYTES", 20],
                            ["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": 1700000000, "tv_nsec": 0}],
                        ]
                    }
                ],
            ],
        ]
    )
    second = _decoded([["WGDEVICE_A_PEERS", [{"attrs": [["WGPEER_A_PUBLIC_KEY", other]]}]]])
    port, stats = parse_info([first, second])
    assert port == 51820
    assert [(s.public_key, s.rx_bytes, s.tx_bytes, s.last_handshake) for s in stats] == [
        (PUB, 10, 20, 1700000000.0),
        (other, 0, 0, None),
    ]


async def test_backends_refuse_unknown_interfaces_and_bad_input() -> None:
    for backend in (UserspaceBackend(kernel=FakeKernel()), KernelBackend(kernel=FakeKernel())):
        with pytest.raises(NotFound, match="not managed"):
            await backend.stats("wgnone0")
        with pytest.raises(NotFound, match="not managed"):
            await backend.set_peer("wgnone0", WgPeer(PUB, None, ()))
        with pytest.raises(InvalidArgument, match="private_key"):
            await backend.create("wgbad0", None, "short", 0)
        with pytest.raises(InvalidArgument, match="listen_port"):
            await backend.create("wgbad0", None, generate_keypair()[0], 70000)
        with pytest.raises(NotFound, match="underlay_netns"):
            await backend.create("wgbad0", "/var/run/netns/vwt-absent", generate_keypair()[0], 0)
        await backend.delete("wgnone0")  # idempotent on what never existed


def test_kernel_allowed_ips_request_only_adds() -> None:
    _, public = generate_keypair()
    request = allowed_ips_request(public, ["10.89.0.0/24"])
    assert request == {"public_key": public, "update_only": True,
                       "allowed_ips": ["10.89.0.0/24"]}  # no replace, keepalive or endpoint
