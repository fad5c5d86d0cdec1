"""Local vWire: client and endpoint on the same node, cross-connected by one veth pair.

Contract of :func:`program_local`:

* validates the whole spec and resolves both namespaces first (``InvalidArgument``/``NotFound``
  naming the field; nothing is created on rejected input);
* creates one veth pair, the client end (``client.ifname``, generated when absent) in the
  client's namespace and the endpoint end in the endpoint's, both marked ``vwire:<id>``;
* client end: ``src`` addresses and routes; endpoint end: ``dst`` addresses and routes; IPv4 and
  IPv6; empty next hop = via the other end (see :mod:`forwarder.vwire.attach`); neighbours;
* MTU on both ends = the requested context MTU or 1500, returned as ``VWire.mtu``;
* any failure deletes the pair again (with it every address, route and neighbour) and re-raises;
  ``VWire.close`` does the same later and is idempotent.

Isolation: each end lives in its workload's own namespace, so connections with overlapping
addresses never share a routing table.
"""

from __future__ import annotations

from forwarder.kernel import KernelPort
from sdk.errors import InvalidArgument

from . import resolve, validate
from .attach import apply_end, parse_addresses, plan_end
from .handle import End, VWire, program_or_rollback
from .mtu import local_mtu
from .naming import generated_ifname, marker
from .spec import LocalVWireSpec


async def program_local(kernel: KernelPort, spec: LocalVWireSpec) -> VWire:
    """Program a local vWire (see module docstring) and return its handle."""
    cid = validate.connection_id(spec.connection_id)
    client_ns = await resolve.namespace(kernel, spec.client.netns, "client.netns")
    endpoint_ns = await resolve.namespace(kernel, spec.endpoint.netns, "endpoint.netns")
    client_if = _ifname(spec.client.ifname, cid, "client")
    endpoint_if = _ifname(spec.endpoint.ifname, cid, "endpoint")
    if client_ns == endpoint_ns and client_if == endpoint_if:
        raise InvalidArgument(
            "endpoint.ifname", f"{endpoint_if} is also the client's name in the same namespace"
        )
    client_addrs = parse_addresses(spec.client, "client")
    endpoint_addrs = parse_addresses(spec.endpoint, "endpoint")
    ipv6 = any(a.version == 6 for a in client_addrs + endpoint_addrs)
    mtu = local_mtu(spec.mtu, ipv6=ipv6)
    client = plan_end(
        "client", spec.client, client_ns, client_if, endpoint_addrs, point_to_point=False
    )
    endpoint = plan_end(
        "endpoint", spec.endpoint, endpoint_ns, endpoint_if, client_addrs, point_to_point=False
    )
    ends = (End("client", client_ns, client_if), End("endpoint", endpoint_ns, endpoint_if))
    vwire = VWire(kernel, cid, mtu, ends)

    async def steps() -> None:
        await kernel.create_veth(client_if, client_ns, endpoint_if, endpoint_ns)
        # Deleting either end removes both; the second undo then finds nothing (fine).
        vwire.undo.push(
            f"delete {endpoint_if}", lambda: kernel.delete_link(endpoint_ns, endpoint_if)
        )
        vwire.undo.push(f"delete {client_if}", lambda: kernel.delete_link(client_ns, client_if))
        for plan in (client, endpoint):
            await apply_end(kernel, plan, mtu=mtu, alias=marker(cid))

    return await program_or_rollback(vwire, steps)


def _ifname(requested: str | None, cid: str, role: str) -> str:
    if requested is None or requested == "":
        return generated_ifname(cid, role)
    return validate.ifname(requested, f"{role}.ifname")
