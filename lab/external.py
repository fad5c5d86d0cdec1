"""External hosts in a lab fabric: the external-host router on a node, and a simulated host that
is configured only from the wg-quick file ``nsmctl external config`` prints (docs/external.md).

For lab code and tests (names below are public)::

    process = start_router(fabric, node=1)           # python -m external on node n1
    netns = add_host_netns(fabric, "laptop")         # <prefix>h-laptop on the underlay bridge
    private, public = generate_key(netns)            # `wg genkey` / `wg pubkey` in the host
    # nsmctl --registry <fabric.registry_url> external add laptop --service db --public-key ...
    apply_config(netns, config_text, key_file)       # wg-quick's work, by hand, on wireguard-go
    remove_config(netns)                             # wg-quick down

:func:`parse_wg_quick` splits a wg-quick file into what ``wg setconf`` takes and what wg-quick
does itself (addresses, MTU, DNS, PostUp). :func:`apply_config` runs ``wireguard-go`` in the
host's namespace (:meth:`lab.fabric.Fabric.down` kills it with the namespace), ``wg setconf``,
the PostUp commands, the addresses and a route per AllowedIPs prefix, as wg-quick would.
The host's namespace has its own prefix-derived name, so :meth:`Fabric.down` removes it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab import network
from lab.fabric import Fabric
from lab.topology import UNDERLAY_BRIDGE, UNDERLAY_NET
from sdk.errors import FailedPrecondition, InvalidArgument

HOST_BASE = 200  # hosts' underlay addresses: 10.250.0.200 and up
INTERFACE_ONLY = ("address", "mtu", "dns", "postup", "predown", "postdown", "preup", "table",
                  "saveconfig")


def router_process(node: int) -> str:
    """The lab's process name of the external-host router on ``node``."""
    return f"n{node}-external"


def router_netns_prefix(fabric: Fabric) -> str:
    """The router namespaces' prefix: inside the fabric's own, so teardown removes them."""
    return f"{fabric.topology.prefix}x-"


def start_router(fabric: Fabric, node: int = 1) -> str:
    """Start ``python -m external`` for ``node`` (its namespace and underlay address are the
    public ones);
    returns the process name. Requests are served once it watches the registry."""
    where = fabric.node(node)
    name = f"external-{where.name}"
    process = router_process(node)
    fabric.processes.start(process, [
        "external", "--listen", f"unix://{where.dir / 'external.sock'}",
        "--public-address", where.underlay_ip, "--registry", fabric.registry_url,
        "--nsmgr", f"unix://{where.nsmgr_socket}", "--name", name,
        "--netns-prefix", router_netns_prefix(fabric),
        "--state-dir", str(where.dir / "external"),
        "--svid-dir", str(fabric.identity("nsc", name)), "--nsmgr-id", fabric.nsmgr_id(node),
        "--public-netns", f"/var/run/netns/{where.netns}", "--log-level", fabric.log_level,
    ])  # in the host's mount namespace (not `ip netns exec`): its router namespaces must be
    # visible to the forwarder
    return process


def add_host_netns(fabric: Fabric, name: str, index: int = 0) -> str:
    """A namespace ``<prefix>h-<name>`` on the fabric's underlay bridge with address
    ``10.250.0.<200+index>/24``: an external host on the simulated internet."""
    netns = f"{fabric.topology.prefix}h-{name}"
    network.add_netns(netns)
    peer = f"h{index}-{hashlib.sha256(netns.encode()).hexdigest()[:6]}"
    network.ip("link", "add", "eth0", "netns", netns, "type", "veth", "peer", "name", peer,
               "netns", fabric.topology.underlay_netns)
    network.ip("link", "set", peer, "master", UNDERLAY_BRIDGE, "up",
               netns=fabric.topology.underlay_netns)
    network.ip("addr", "add", f"{UNDERLAY_NET}.{HOST_BASE + index}/24", "dev", "eth0",
               netns=netns)
    network.ip("link", "set", "eth0", "up", netns=netns)
    return netns


def _run(netns: str, *cmd: str, stdin: str | None = None) -> str:
    done = subprocess.run(["ip", "netns", "exec", netns, *cmd], input=stdin,
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise FailedPrecondition(f"`{' '.join(cmd)}` in {netns} failed: {done.stderr.strip()}")
    return done.stdout


def generate_key(netns: str) -> tuple[str, str]:
    """``wg genkey`` and ``wg pubkey`` run in the host: (private, public), base64."""
    private = _run(netns, "wg", "genkey").strip()
    return private, _run(netns, "wg", "pubkey", stdin=private + "\n").strip()


@dataclass
class WgQuick:
    """A wg-quick file split into ``wg setconf`` input and wg-quick's own settings."""

    setconf: str
    addresses: list[str] = field(default_factory=list)
    mtu: int = 0
    dns: list[str] = field(default_factory=list)
    post_up: list[str] = field(default_factory=list)
    allowed_ips: list[str] = field(default_factory=list)


def parse_wg_quick(text: str) -> WgQuick:
    """Split a wg-quick file (see the module docstring)."""
    kept: list[str] = []
    found = WgQuick("")
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep:
            kept.append(line)
            continue
        lower = key.lower()
        values = [v.strip() for v in value.split(",") if v.strip()]
        if lower == "address":
            found.addresses += values
        elif lower == "mtu":
            found.mtu = int(value)
        elif lower == "dns":
            found.dns += values
        elif lower == "postup":
            found.post_up.append(value)
        elif lower == "allowedips":
            found.allowed_ips += values
        if lower not in INTERFACE_ONLY:
            kept.append(line)
    found.setconf = "\n".join(line for line in kept if line) + "\n"
    return found


def host_ifname(netns: str) -> str:
    """The host's WireGuard interface: unique per namespace (wireguard-go sockets are global)."""
    return "xh" + hashlib.sha256(netns.encode()).hexdigest()[:10]


def remove_config(netns: str, timeout: float = 5.0) -> None:
    """Take the host's WireGuard interface down as ``wg-quick down`` would, and wait (bounded)
    until its wireguard-go has exited and its control socket is gone."""
    ifname = host_ifname(netns)
    network.ip("link", "del", ifname, netns=netns, check=False)
    socket = Path(f"/var/run/wireguard/{ifname}.sock")
    deadline = time.monotonic() + timeout
    while socket.exists():
        if time.monotonic() > deadline:
            raise FailedPrecondition(f"wireguard-go for {ifname} did not exit")
        time.sleep(0.05)  # bounded wait for the daemon to notice its link is gone


def apply_config(netns: str, text: str, key_file: Path | None = None) -> str:
    """Bring the wg-quick file ``text`` up in ``netns`` as wg-quick would; returns the interface.
    ``key_file`` is where PostUp's ``private-key`` path points (the test writes the host's key
    there)."""
    conf = parse_wg_quick(text)
    if not conf.addresses:
        raise InvalidArgument("config", "has no Address")
    ifname = host_ifname(netns)
    _run(netns, "wireguard-go", ifname)
    _run(netns, "wg", "setconf", ifname, "/dev/stdin", stdin=conf.setconf)
    for command in conf.post_up:
        args = [ifname if word == "%i" else word for word in shlex.split(command)]
        if key_file is not None and "private-key" in args:
            args[args.index("private-key") + 1] = str(key_file)
        _run(netns, *args)
    for address in conf.addresses:
        network.ip("addr", "add", address, "dev", ifname, netns=netns)
    network.ip("link", "set", ifname, *(["mtu", str(conf.mtu)] if conf.mtu else []), "up",
               netns=netns)
    for prefix in conf.allowed_ips:
        family = "-6" if ipaddress.ip_network(prefix, strict=False).version == 6 else "-4"
        network.ip(family, "route", "replace", prefix, "dev", ifname, netns=netns)
    return ifname
