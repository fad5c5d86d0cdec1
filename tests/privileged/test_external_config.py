"""The wg-quick file ``nsmctl external config`` prints, brought up by the real ``wg-quick`` on
wireguard-go: the host's very first handshake must already carry its key.

An external *server* only answers: the fabric side cannot dial it (it does not know where the
host is until the host's handshake arrives), so everything waits for the host's first handshake.
wg-quick sets ``PostUp`` after the link is up; a keepalive switched on in ``[Peer]`` leaves at
link up, before the key, and is refused, and WireGuard's next attempt comes 5 s later (what a
docs run saw as three pings answered together after 3.6 s).
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sdk.external import ExternalStatus, render_config
from tests.privileged.conftest import run

pytestmark = pytest.mark.privileged

FABRIC_PORT = 51999
RETRY_SECONDS = 5.0  # WireGuard's REKEY_TIMEOUT: the next handshake after a refused one


def _keypair() -> tuple[str, str]:
    private = run("wg", "genkey").stdout.strip()
    public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True,
                            check=True).stdout.strip()
    return private, public


def _latest_handshake(netns: str, ifname: str) -> int:
    out = run("wg", "show", ifname, "latest-handshakes", netns=netns).stdout.split()
    return int(out[1]) if len(out) == 2 else 0


def test_the_host_s_first_handshake_is_accepted(
    netns: Callable[[str], str], tmp_path: Path
) -> None:
    fabric, host = netns("fabric"), netns("host")
    run("ip", "link", "add", "v0", "netns", fabric, "type", "veth", "peer", "name", "v0",
        "netns", host)
    for ns, address in ((fabric, "192.0.2.1/24"), (host, "192.0.2.2/24")):
        run("ip", "addr", "add", address, "dev", "v0", netns=ns)
        run("ip", "link", "set", "v0", "up", netns=ns)

    tag = secrets.token_hex(3)
    fabric_if, host_if = f"vwf{tag}", f"vwh{tag}"  # wireguard-go's sockets are not per namespace
    fabric_private, fabric_public = _keypair()
    host_private, host_public = _keypair()
    key_file = tmp_path / "host.key"
    key_file.write_text(host_private + "\n")
    key_file.chmod(0o600)
    fabric_key = tmp_path / "fabric.key"
    fabric_key.write_text(fabric_private + "\n")
    fabric_key.chmod(0o600)

    run("wireguard-go", fabric_if, netns=fabric)
    try:
        # The fabric's side as the router sets it: the host's key, no endpoint (it roams).
        run("wg", "set", fabric_if, "private-key", str(fabric_key), "listen-port",
            str(FABRIC_PORT), "peer", host_public, "allowed-ips", "10.60.0.2/32", netns=fabric)
        run("ip", "addr", "add", "10.60.0.1/32", "dev", fabric_if, netns=fabric)
        run("ip", "link", "set", fabric_if, "up", netns=fabric)

        status = ExternalStatus("srv", "ready", ("192.0.2.1", FABRIC_PORT), fabric_public,
                                ("10.60.0.2/32",), ("10.60.0.1/32",), 1420)
        conf = tmp_path / f"{host_if}.conf"
        conf.write_text(render_config(status, key_file=str(key_file)))
        conf.chmod(0o600)
        run("wg-quick", "up", str(conf), netns=host)
        try:
            began = time.monotonic()
            while not _latest_handshake(fabric, fabric_if):
                assert time.monotonic() - began < RETRY_SECONDS - 1.5, (
                    "the host's first handshake was refused: the fabric saw none before "
                    "WireGuard's 5 s retry")
                time.sleep(0.05)  # bounded by the assertion above
            keepalive = run("wg", "show", host_if, "persistent-keepalive", netns=host).stdout
            assert keepalive.split() == [fabric_public, "25"], keepalive
        finally:
            run("wg-quick", "down", str(conf), netns=host, check=False)
    finally:
        run("ip", "link", "del", fabric_if, netns=fabric, check=False)
