"""Point-to-point IPAM for the reference endpoint: one address pair per connection.

Convention (NSM's ``point2pointipam``): every connection gets, from each configured prefix, one
address for the endpoint (``dst_ip_addrs``) and one for the client (``src_ip_addrs``), each as a
host prefix (``/32`` for IPv4, ``/128`` for IPv6); the client side gets a route to the endpoint
address (``src_routes``, installed on the client side) and the endpoint side a route to the client
address (``dst_routes``). The endpoint takes the lower address of the pair: the first connection
from ``10.60.0.0/16`` is endpoint ``10.60.0.1/32``, client ``10.60.0.2/32``.

* Dual stack: at most one IPv4 and one IPv6 prefix; with both, every connection gets a pair from
  each (addresses listed IPv4 first).
* Never handed out: an IPv4 prefix's network and broadcast addresses, an IPv6 prefix's first
  (Subnet-Router anycast) address — except in /31 and /127 prefixes, where both addresses are
  usable (RFC 3021) — the constructor's ``reserved`` prefixes, and any address inside the
  request's ``excluded_prefixes``.
* Same connection id → same pair (refresh), as long as the pair stays outside the request's
  excluded prefixes; an address that falls inside them is replaced (the rest is kept).
* :meth:`PointToPointIpam.release` frees the pair; addresses are handed out lowest-free-first.
* Full prefix → :class:`~sdk.errors.ResourceExhausted` naming the prefix; free addresses that the
  request's ``excluded_prefixes`` all cover → :class:`~sdk.errors.InvalidArgument` naming that
  field (the request's fault, not the endpoint's); either way nothing is half-taken.

Free space is kept as sorted, disjoint intervals of integers, so an allocation costs a few
bisections whatever the prefix size (a /64 is as cheap as a /30) and never rescans from the start.
Pure logic, no I/O; not thread-safe (use from one event loop).
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, MutableSequence, Sequence
from dataclasses import dataclass

from api.proto.connectioncontext_pb2 import IPContext, Route
from sdk.errors import InvalidArgument, ResourceExhausted

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
#: Inclusive integer ranges, sorted and disjoint.
Ranges = list[tuple[int, int]]


@dataclass(frozen=True)
class Allocation:
    """The addresses of one connection: client side (src) and endpoint side (dst), as CIDRs."""

    src_addrs: tuple[str, ...]
    dst_addrs: tuple[str, ...]


class _FreeSpace:
    """A set of integers stored as sorted, disjoint, inclusive intervals."""

    def __init__(self, lo: int, hi: int) -> None:
        self._starts = [lo] if lo <= hi else []
        self._ends = [hi] if lo <= hi else []
        self.count = max(hi - lo + 1, 0)

    def _index(self, value: int) -> int | None:
        i = bisect_right(self._starts, value) - 1
        return i if i >= 0 and self._ends[i] >= value else None

    def _remove(self, i: int, value: int) -> None:
        start, end = self._starts[i], self._ends[i]
        if start == end:
            del self._starts[i], self._ends[i]
        elif value == start:
            self._starts[i] = value + 1
        elif value == end:
            self._ends[i] = value - 1
        else:
            self._ends[i] = value - 1
            self._starts.insert(i + 1, value + 1)
            self._ends.insert(i + 1, end)
        self.count -= 1

    def take(self, value: int) -> bool:
        """Remove ``value`` if free; report whether it was."""
        i = self._index(value)
        if i is None:
            return False
        self._remove(i, value)
        return True

    def take_lowest(self, excluded: Ranges) -> int | None:
        """Remove and return the lowest free value outside ``excluded``; None if there is none."""
        ex_starts = [lo for lo, _ in excluded]
        i = 0
        candidate = self._starts[0] if self._starts else 0
        while i < len(self._starts):
            candidate = max(candidate, self._starts[i])
            j = bisect_right(ex_starts, candidate) - 1
            if j >= 0 and excluded[j][1] >= candidate:
                candidate = excluded[j][1] + 1
                i = bisect_left(self._ends, candidate, lo=i)
                continue
            self._remove(i, candidate)
            return candidate
        return None

    def take_range(self, lo: int, hi: int) -> None:
        """Remove every value in ``[lo, hi]``."""
        starts: list[int] = []
        ends: list[int] = []
        for start, end in zip(self._starts, self._ends, strict=True):
            if end < lo or start > hi:
                starts.append(start)
                ends.append(end)
                continue
            self.count -= min(end, hi) - max(start, lo) + 1
            if start < lo:
                starts.append(start)
                ends.append(lo - 1)
            if end > hi:
                starts.append(hi + 1)
                ends.append(end)
        self._starts, self._ends = starts, ends

    def give(self, value: int) -> None:
        """Add ``value`` (which must not be free), merging with its neighbours."""
        i = bisect_right(self._starts, value)
        joins_left = i > 0 and self._ends[i - 1] == value - 1
        joins_right = i < len(self._starts) and self._starts[i] == value + 1
        if joins_left and joins_right:
            self._ends[i - 1] = self._ends[i]
            del self._starts[i], self._ends[i]
        elif joins_left:
            self._ends[i - 1] = value
        elif joins_right:
            self._starts[i] = value
        else:
            self._starts.insert(i, value)
            self._ends.insert(i, value)
        self.count += 1


class _Pool:
    """The addresses of one configured prefix."""

    def __init__(self, network: Network, reserved: Iterable[Network]) -> None:
        self.network = network
        self.host_bits = network.max_prefixlen
        first, last = int(network.network_address), int(network.broadcast_address)
        if network.num_addresses > 2:
            first += 1
            if network.version == 4:
                last -= 1
        self.free = _FreeSpace(first, last)
        for lo, hi in self.ranges(reserved):
            self.free.take_range(lo, hi)

    def ranges(self, networks: Iterable[Network]) -> Ranges:
        """``networks`` of this pool's family that overlap it, as merged integer ranges."""
        lowest, highest = int(self.network.network_address), int(self.network.broadcast_address)
        spans = sorted(
            (max(int(n.network_address), lowest), min(int(n.broadcast_address), highest))
            for n in networks
            if n.version == self.network.version
            and int(n.network_address) <= highest
            and int(n.broadcast_address) >= lowest
        )
        merged: Ranges = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        return merged

    def cidr(self, value: int) -> str:
        """``value`` as a host prefix, e.g. ``10.60.0.1/32``."""
        kind = ipaddress.IPv4Address if self.network.version == 4 else ipaddress.IPv6Address
        return f"{kind(value)}/{self.host_bits}"

    def __contains__(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return address.version == self.network.version and address in self.network


def _excluded(value: int, ranges: Ranges) -> bool:
    return any(lo <= value <= hi for lo, hi in ranges)


def parse_prefixes(field: str, values: Sequence[str]) -> list[Network]:
    """Parse CIDR prefixes (host bits allowed); InvalidArgument names ``field[i]``."""
    networks = []
    for i, value in enumerate(values):
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError as exc:
            raise InvalidArgument(
                f"{field}[{i}]", f"{value!r} is not a CIDR prefix ({exc})"
            ) from None
    return networks


def _parse_interfaces(field: str, values: Sequence[str]) -> list[Interface]:
    interfaces = []
    for i, value in enumerate(values):
        try:
            interfaces.append(ipaddress.ip_interface(value))
        except ValueError as exc:
            raise InvalidArgument(
                f"{field}[{i}]",
                f"{value!r} is not an address in CIDR form, e.g. 10.0.0.1/32 ({exc})",
            ) from None
    return interfaces


class PointToPointIpam:
    """Hands out point-to-point address pairs per connection id; see the module docstring.

    ``prefixes``: one IPv4 and/or one IPv6 prefix, e.g. ``["169.254.0.0/16", "fd00:60::/64"]``.
    ``reserved``: prefixes never handed out (e.g. a gateway). Bad configuration raises
    InvalidArgument naming ``prefixes[i]`` / ``reserved[i]``; a single string
    counts as a list of one.
    """

    def __init__(self, prefixes: Sequence[str], reserved: Sequence[str] = ()) -> None:
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        if isinstance(reserved, str):
            reserved = [reserved]
        if not prefixes:
            raise InvalidArgument("prefixes", "configure at least one IPv4 or IPv6 prefix")
        reserved_networks = parse_prefixes("reserved", reserved)
        pools: dict[int, _Pool] = {}
        for i, prefix in enumerate(prefixes):
            try:
                network = ipaddress.ip_network(prefix)
            except ValueError as exc:
                raise InvalidArgument(
                    f"prefixes[{i}]", f"{prefix!r} is not a CIDR prefix, e.g. 10.60.0.0/16 ({exc})"
                ) from None
            if network.version in pools:
                raise InvalidArgument(
                    f"prefixes[{i}]",
                    f"a second IPv{network.version} prefix: give at most one per family",
                )
            pool = _Pool(network, reserved_networks)
            if pool.free.count < 2:
                raise InvalidArgument(
                    f"prefixes[{i}]",
                    f"{prefix} has fewer than 2 usable addresses: use a shorter prefix",
                )
            pools[network.version] = pool
        self._pools = [pools[version] for version in sorted(pools)]
        self._connections: dict[str, dict[int, tuple[int, int]]] = {}

    @property
    def prefixes(self) -> tuple[str, ...]:
        """The configured prefixes, IPv4 first."""
        return tuple(str(pool.network) for pool in self._pools)

    def free_addresses(self, prefix: str) -> int:
        """How many addresses of ``prefix`` (one of :attr:`prefixes`) can still be handed out."""
        for pool in self._pools:
            if str(pool.network) == prefix:
                return pool.free.count
        raise KeyError(prefix)

    def lookup(self, conn_id: str) -> Allocation | None:
        """The current allocation of ``conn_id``, if any."""
        record = self._connections.get(conn_id)
        return None if record is None else self._allocation(record)

    def allocate(self, conn_id: str, excluded: Sequence[str] = ()) -> Allocation:
        """The address pair(s) of ``conn_id``: its existing ones, or new ones.

        ``excluded``: CIDR prefixes no returned address may be inside (InvalidArgument names
        ``excluded_prefixes[i]`` if one is malformed). Raises ResourceExhausted if a prefix is
        full; then nothing changes.
        """
        return self._assign(conn_id, parse_prefixes("excluded_prefixes", excluded), {})

    def release(self, conn_id: str) -> None:
        """Free the addresses of ``conn_id``; unknown ids are ignored (idempotent)."""
        record = self._connections.pop(conn_id, None)
        for pool in self._pools:
            if record is not None and pool.network.version in record:
                for value in record[pool.network.version]:
                    pool.free.give(value)

    def fill_ip_context(self, ip_context: IPContext, conn_id: str) -> Allocation:
        """Allocate for ``conn_id`` and write the result into ``ip_context``.

        * Every address and route prefix already in the request is validated first;
          InvalidArgument names the field (``ip_context.src_ip_addrs[1]``, ...). Nothing is
          changed when validation or allocation fails.
        * Addresses inside one of this IPAM's prefixes that are free (e.g. a client refreshing
          after the endpoint restarted) are adopted as this connection's addresses; ones that
          are taken by another connection or excluded are replaced.
        * The client's side: addresses outside this IPAM's prefixes (the client's own) are
          kept, in order, and this IPAM's addresses follow them; ``src_routes`` gets a host
          route to each endpoint address unless already present, and stale host routes into
          this IPAM's prefixes (to addresses that are no longer this connection's) are removed.
        * The endpoint's side is installed in the endpoint's namespace, so it is this IPAM's
          alone: ``dst_ip_addrs`` are exactly this connection's endpoint addresses and
          ``dst_routes`` exactly host routes to its client addresses; whatever else a request
          brings there (say, a default route that would pull the endpoint's traffic into the
          client's tunnel) is dropped.
        """
        src = _parse_interfaces("ip_context.src_ip_addrs", ip_context.src_ip_addrs)
        dst = _parse_interfaces("ip_context.dst_ip_addrs", ip_context.dst_ip_addrs)
        excluded = parse_prefixes("ip_context.excluded_prefixes", ip_context.excluded_prefixes)
        src_routes = _parse_routes("ip_context.src_routes", ip_context.src_routes)
        _parse_routes("ip_context.dst_routes", ip_context.dst_routes)  # bad: refused; else replaced
        wanted: dict[int, tuple[int | None, int | None]] = {
            pool.network.version: (_first_in(pool, dst), _first_in(pool, src))
            for pool in self._pools
        }
        allocation = self._assign(conn_id, excluded, wanted)
        _replace_addrs(ip_context.src_ip_addrs, src, allocation.src_addrs, self._pools)
        _replace_routes(ip_context.src_routes, src_routes, allocation.dst_addrs, self._pools)
        del ip_context.dst_ip_addrs[:]
        ip_context.dst_ip_addrs.extend(allocation.dst_addrs)
        del ip_context.dst_routes[:]
        ip_context.dst_routes.extend(Route(prefix=addr) for addr in allocation.src_addrs)
        return allocation

    def _assign(
        self,
        conn_id: str,
        excluded: Sequence[Network],
        wanted: dict[int, tuple[int | None, int | None]],
    ) -> Allocation:
        """Keep, adopt (``wanted`` per family: endpoint, client) or take addresses, atomically."""
        old = self._connections.get(conn_id, {})
        record: dict[int, tuple[int, int]] = {}
        taken: list[tuple[_Pool, int]] = []
        dropped: list[tuple[_Pool, int]] = []
        try:
            for pool in self._pools:
                version = pool.network.version
                ranges = pool.ranges(excluded)
                current = old.get(version, (None, None))
                pair = []
                for have, want in zip(current, wanted.get(version, (None, None)), strict=True):
                    if have is not None and not _excluded(have, ranges):
                        pair.append(have)
                        continue
                    if have is not None:
                        dropped.append((pool, have))
                    value = self._take(pool, conn_id, want, ranges)
                    taken.append((pool, value))
                    pair.append(value)
                record[version] = (pair[0], pair[1])
        except BaseException:
            for pool, value in taken:
                pool.free.give(value)
            raise
        for pool, value in dropped:
            pool.free.give(value)
        self._connections[conn_id] = record
        return self._allocation(record)

    def _take(self, pool: _Pool, conn_id: str, want: int | None, ranges: Ranges) -> int:
        if want is not None and not _excluded(want, ranges) and pool.free.take(want):
            return want
        value = pool.free.take_lowest(ranges)
        if value is None and pool.free.count > 0:
            # Free addresses exist, the request's exclusions cover them all: its fault, not a
            # full prefix (and not a reason to think less of this endpoint).
            raise InvalidArgument(
                "ip_context.excluded_prefixes",
                f"exclude every free address of {pool.network} ({pool.free.count} free): "
                "exclude less, or ask an endpoint with another prefix",
            )
        if value is None:
            excluding = f", the request excludes {len(ranges)} ranges of it" if ranges else ""
            raise ResourceExhausted(
                f"IPAM prefix {pool.network}: no free address left for connection {conn_id!r} "
                f"({len(self._connections)} connections hold addresses{excluding}); "
                "close connections or configure a larger prefix"
            )
        return value

    def _allocation(self, record: dict[int, tuple[int, int]]) -> Allocation:
        pools = [pool for pool in self._pools if pool.network.version in record]
        return Allocation(
            src_addrs=tuple(pool.cidr(record[pool.network.version][1]) for pool in pools),
            dst_addrs=tuple(pool.cidr(record[pool.network.version][0]) for pool in pools),
        )


def _first_in(pool: _Pool, interfaces: Sequence[Interface]) -> int | None:
    return next((int(i.ip) for i in interfaces if i.ip in pool), None)


def _parse_routes(field: str, routes: Sequence[Route]) -> list[Network]:
    prefixes = parse_prefixes(field, [route.prefix for route in routes])
    for i, route in enumerate(routes):
        if route.nextHop:
            try:
                ipaddress.ip_address(route.nextHop)
            except ValueError:
                raise InvalidArgument(
                    f"{field}[{i}].nextHop", f"{route.nextHop!r} is not an IP address"
                ) from None
    return prefixes


def _replace_addrs(
    field: MutableSequence[str],
    parsed: Sequence[Interface],
    ours: Sequence[str],
    pools: Sequence[_Pool],
) -> None:
    kept = [
        text
        for text, interface in zip(field, parsed, strict=True)
        if not any(interface.ip in pool for pool in pools)
    ]
    del field[:]
    field.extend([*kept, *ours])


def _replace_routes(
    field: MutableSequence[Route],
    parsed: Sequence[Network],
    targets: Sequence[str],
    pools: Sequence[_Pool],
) -> None:
    wanted = [ipaddress.ip_network(target) for target in targets]
    present = set()
    for i in reversed(range(len(parsed))):
        prefix = parsed[i]
        if prefix in wanted:
            present.add(prefix)
        elif prefix.prefixlen == prefix.max_prefixlen and any(
            prefix.network_address in pool for pool in pools
        ):
            del field[i]
    field.extend(
        Route(prefix=target)
        for target, net in zip(targets, wanted, strict=True)
        if net not in present
    )
