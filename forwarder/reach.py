"""Which address each end of a remote vWire dials, who keeps the NAT open, and the path's MTU.

Pure decisions from the two sides' :class:`api.mechanisms.wireguard.Reach` (what each forwarder
advertises about its node) and their tunnel addresses; no I/O. Rules:

* **Same site** (equal ``site``; "" is the default site every unconfigured node is in): the two
  nodes reach each other directly at their in-site addresses (``site_ip``, else the advertised
  address), whatever NAT they sit behind towards the outside.
* **Different sites**: a side is dialled at its advertised address (its external address when
  it is behind 1:1 NAT) unless it is behind a masquerading NAT: then nobody can dial it, the
  other side's WireGuard is configured *without* an endpoint for it and learns it from its
  first handshake. When neither side can be dialled, :func:`check_reachable` fails with
  ``FailedPrecondition`` naming both nodes and why (no relay).
* **Keepalive**: a node behind a masquerading NAT sends a persistent keepalive every
  :data:`NAT_KEEPALIVE` seconds on tunnels that leave its site (GCP's UDP idle timeout is 30 s),
  so the NAT mapping the far side learned stays open; other tunnels send none.
* **Path MTU** (:func:`path_mtu`): the smallest underlay MTU of the two ends and, when the path
  leaves the site, of both sides' ``wan_mtu``; an MTU a side did not advertise (0) is unknown and
  left out. The tunnel MTU is that minus the WireGuard overhead of the underlay's family
  (:mod:`forwarder.vwire.mtu`); the endpoint side computes it and sends it back in ``MTU``, so
  both ends use the same figure.
"""

from __future__ import annotations

from ipaddress import ip_address

from api.mechanisms.wireguard import NAT_MASQUERADE, Reach
from sdk.errors import FailedPrecondition

NAT_KEEPALIVE = 25


def same_site(a: Reach, b: Reach) -> bool:
    return a.site == b.site


def dial_address(me: Reach, peer: Reach, peer_ip: str) -> str | None:
    """The address ``me`` dials to reach ``peer`` (advertised at ``peer_ip``); None when ``me``
    cannot dial it and must wait for its handshake."""
    if same_site(me, peer):
        return peer.site_ip or peer_ip or None
    if peer.nat == NAT_MASQUERADE:
        return None
    return peer_ip or None


def keepalive(me: Reach, peer: Reach) -> int | None:
    """Persistent keepalive seconds for ``me``'s tunnel to ``peer`` (None: off)."""
    if me.nat == NAT_MASQUERADE and not same_site(me, peer):
        return NAT_KEEPALIVE
    return None


def _describe(side: Reach) -> str:
    site = f" in site {side.site!r}" if side.site else ""
    return f"{side.node or 'an unnamed node'}{site}"


def check_reachable(client: Reach, client_ip: str, endpoint: Reach, endpoint_ip: str) -> None:
    """FailedPrecondition when neither side can dial the other (see the module docstring)."""
    if dial_address(client, endpoint, endpoint_ip) or dial_address(endpoint, client, client_ip):
        return
    why = []
    for side, ip in ((client, client_ip), (endpoint, endpoint_ip)):
        if side.nat == NAT_MASQUERADE:
            why.append(f"{_describe(side)} is behind a masquerading NAT")
        elif not ip:
            why.append(f"{_describe(side)} advertises no tunnel address")
    raise FailedPrecondition(
        f"no vWire between {_describe(client)} and {_describe(endpoint)}: neither can reach the "
        f"other ({'; '.join(why)}); give one of them a reachable address "
        "(--nat one-to-one --external-address IP, or --nat none) or put both in one site"
    )


def path_mtu(a: Reach, b: Reach) -> int:
    """The underlay MTU of the path between ``a`` and ``b`` (0: nothing is known)."""
    known = [a.underlay_mtu, b.underlay_mtu]
    if not same_site(a, b):
        known += [a.wan_mtu, b.wan_mtu]
    known = [m for m in known if m > 0]
    return min(known) if known else 0


def ipv6_underlay(*addresses: str) -> bool:
    """Whether the tunnel runs over IPv6: the first of ``addresses`` that is an IP decides."""
    for address in addresses:
        try:
            return ip_address(address).version == 6
        except ValueError:
            continue
    return True  # unknown: assume the larger overhead (the smaller, always-safe MTU)
