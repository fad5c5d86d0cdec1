"""sdk.ipam: point-to-point pairs, exclusions, refresh reuse, release, exhaustion, dual stack."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.proto.connectioncontext_pb2 import IPContext, Route
from sdk.errors import InvalidArgument, ResourceExhausted
from sdk.ipam import Allocation, PointToPointIpam


def test_first_pair_endpoint_lower_address_host_prefixes() -> None:
    ipam = PointToPointIpam(["10.60.0.0/16"])
    assert ipam.allocate("c1") == Allocation(
        src_addrs=("10.60.0.2/32",), dst_addrs=("10.60.0.1/32",)
    )
    assert ipam.allocate("c2") == Allocation(
        src_addrs=("10.60.0.4/32",), dst_addrs=("10.60.0.3/32",)
    )


def test_refresh_reuses_the_pair_and_release_frees_it() -> None:
    ipam = PointToPointIpam(["10.60.0.0/16"])
    first = ipam.allocate("c1")
    ipam.allocate("c2")
    assert ipam.allocate("c1") == first
    assert ipam.lookup("c1") == first
    ipam.release("c1")
    ipam.release("c1")  # idempotent
    ipam.release("never")
    assert ipam.lookup("c1") is None
    assert ipam.allocate("c3") == first  # lowest free first


def test_ipv4_network_and_broadcast_never_handed_out() -> None:
    ipam = PointToPointIpam(["192.168.1.0/30"])  # .0 network, .3 broadcast
    assert ipam.allocate("c") == Allocation(("192.168.1.2/32",), ("192.168.1.1/32",))
    with pytest.raises(ResourceExhausted, match=r"192\.168\.1\.0/30.*'d'.*larger prefix"):
        ipam.allocate("d")


def test_slash_31_and_127_use_both_addresses() -> None:
    assert PointToPointIpam(["10.0.0.0/31"]).allocate("c").dst_addrs == ("10.0.0.0/32",)
    assert PointToPointIpam(["fd00::/127"]).allocate("c").src_addrs == ("fd00::1/128",)


def test_ipv6_skips_subnet_router_anycast() -> None:
    ipam = PointToPointIpam(["fd00:60::/64"])
    assert ipam.allocate("c") == Allocation(("fd00:60::2/128",), ("fd00:60::1/128",))


def test_exhaustion_leaves_nothing_half_taken() -> None:
    ipam = PointToPointIpam(["10.0.0.0/29"])  # 6 usable: 3 pairs
    for n in range(3):
        ipam.allocate(f"c{n}")
    assert ipam.free_addresses("10.0.0.0/29") == 0
    with pytest.raises(ResourceExhausted, match="3 connections hold addresses"):
        ipam.allocate("c3")
    ipam.release("c1")
    assert ipam.free_addresses("10.0.0.0/29") == 2
    ipam.allocate("c3")


def test_odd_last_address_rolls_back_the_first_of_the_pair() -> None:
    ipam = PointToPointIpam(["10.0.0.0/29"], reserved=["10.0.0.1/32"])  # 5 usable
    ipam.allocate("a")
    ipam.allocate("b")
    assert ipam.free_addresses("10.0.0.0/29") == 1
    with pytest.raises(ResourceExhausted):
        ipam.allocate("c")
    assert ipam.free_addresses("10.0.0.0/29") == 1
    assert ipam.lookup("c") is None


def test_excluded_prefixes_are_never_handed_out_but_stay_usable_for_others() -> None:
    ipam = PointToPointIpam(["10.60.0.0/16"])
    got = ipam.allocate("c1", excluded=["10.60.0.0/24", "10.60.1.0/30"])
    assert got == Allocation(("10.60.1.5/32",), ("10.60.1.4/32",))
    assert ipam.allocate("c2") == Allocation(("10.60.0.2/32",), ("10.60.0.1/32",))
    # a whole excluded prefix plus holes: still found without scanning
    assert ipam.allocate("c3", excluded=["10.60.0.0/23"]).dst_addrs == ("10.60.2.0/32",)


def test_exclusion_covering_every_free_address_is_the_requests_fault() -> None:
    # InvalidArgument, not ResourceExhausted: the prefix is not full, and a request that excludes
    # everything must not count against the endpoint (nsmgr's circuit breaker would eject it).
    ipam = PointToPointIpam(["10.60.0.0/16"])
    with pytest.raises(InvalidArgument, match=r"excluded_prefixes.*every free address"):
        ipam.allocate("c", excluded=["10.0.0.0/8"])
    assert ipam.free_addresses("10.60.0.0/16") == 65534


def test_a_full_prefix_with_exclusions_is_still_exhausted() -> None:
    ipam = PointToPointIpam(["192.168.1.0/30"])  # one pair
    ipam.allocate("a")
    with pytest.raises(ResourceExhausted, match="excludes 1 ranges"):
        ipam.allocate("b", excluded=["192.168.1.0/31"])


def test_refresh_with_new_exclusion_replaces_only_the_conflicting_address() -> None:
    ipam = PointToPointIpam(["10.60.0.0/16"])
    ipam.allocate("c1")  # dst .1, src .2
    moved = ipam.allocate("c1", excluded=["10.60.0.2/32"])
    assert moved == Allocation(("10.60.0.3/32",), ("10.60.0.1/32",))
    assert ipam.allocate("other") == Allocation(("10.60.0.4/32",), ("10.60.0.2/32",))


def test_a_single_string_is_one_prefix() -> None:
    ipam = PointToPointIpam("10.60.0.0/24", reserved="10.60.0.1/32")
    assert ipam.prefixes == ("10.60.0.0/24",)
    assert ipam.allocate("c").dst_addrs == ("10.60.0.2/32",)


def test_reserved_prefixes() -> None:
    ipam = PointToPointIpam(["10.60.0.0/24"], reserved=["10.60.0.0/28", "fd00::/8"])
    assert ipam.allocate("c").dst_addrs == ("10.60.0.16/32",)
    assert ipam.free_addresses("10.60.0.0/24") == 254 - 15 - 2


def test_dual_stack_fills_both_families() -> None:
    ipam = PointToPointIpam(["fd00:60::/64", "169.254.0.0/16"])
    assert ipam.prefixes == ("169.254.0.0/16", "fd00:60::/64")
    got = ipam.allocate("c", excluded=["fd00:60::/120"])
    assert got == Allocation(
        src_addrs=("169.254.0.2/32", "fd00:60::101/128"),
        dst_addrs=("169.254.0.1/32", "fd00:60::100/128"),
    )
    ipam.release("c")
    assert ipam.free_addresses("169.254.0.0/16") == 65534


@pytest.mark.parametrize(
    ("prefixes", "reserved", "field"),
    [
        ([], [], "prefixes"),
        (["10.0.0.0/33"], [], "prefixes[0]"),
        (["10.0.0.1/16"], [], "prefixes[0]"),  # host bits set
        (["10.0.0.0/16", "10.1.0.0/16"], [], "prefixes[1]"),
        (["10.0.0.0/32"], [], "prefixes[0]"),
        (["10.0.0.0/30"], ["10.0.0.1/32"], "prefixes[0]"),  # one usable address left
        (["10.0.0.0/16"], ["bogus"], "reserved[0]"),
    ],
)
def test_bad_configuration(prefixes: list[str], reserved: list[str], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        PointToPointIpam(prefixes, reserved)
    assert caught.value.field == field


def test_bad_excluded_prefix_names_the_field() -> None:
    with pytest.raises(InvalidArgument, match=r"excluded_prefixes\[1\]: 'nope'"):
        PointToPointIpam(["10.0.0.0/16"]).allocate("c", ["10.1.0.0/16", "nope"])


def test_ten_thousand_pairs_are_unique_and_reusable() -> None:
    ipam = PointToPointIpam(["10.60.0.0/16", "fd00:60::/64"])
    seen: set[str] = set()
    for n in range(10_000):
        got = ipam.allocate(f"c{n}", excluded=["10.60.0.0/24"])
        seen.update(got.src_addrs + got.dst_addrs)
    for n in range(0, 10_000, 2):
        ipam.release(f"c{n}")
    for n in range(5_000):
        ipam.allocate(f"d{n}")
    assert len(seen) == 40_000
    assert ipam.free_addresses("10.60.0.0/16") == 65534 - 20_000


# --- fill_ip_context ----------------------------------------------------------------------


def routes(ctx_routes: Iterable[Route]) -> list[str]:
    return [r.prefix for r in ctx_routes]


def test_fill_sets_addresses_and_routes_each_side_reaches_the_other() -> None:
    ipam = PointToPointIpam(["10.60.0.0/16", "fd00:60::/64"])
    ctx = IPContext()
    ipam.fill_ip_context(ctx, "c")
    assert list(ctx.src_ip_addrs) == ["10.60.0.2/32", "fd00:60::2/128"]
    assert list(ctx.dst_ip_addrs) == ["10.60.0.1/32", "fd00:60::1/128"]
    assert routes(ctx.src_routes) == ["10.60.0.1/32", "fd00:60::1/128"]  # client -> endpoint
    assert routes(ctx.dst_routes) == ["10.60.0.2/32", "fd00:60::2/128"]  # endpoint -> client
    again = IPContext()
    again.CopyFrom(ctx)
    ipam.fill_ip_context(again, "c")  # refresh: idempotent
    assert again == ctx


def test_fill_keeps_foreign_addresses_and_routes() -> None:
    ipam = PointToPointIpam(["10.60.0.0/16"])
    ctx = IPContext(
        src_ip_addrs=["192.168.7.7/24"],
        src_routes=[Route(prefix="0.0.0.0/0", nextHop="192.168.7.1")],
    )
    ipam.fill_ip_context(ctx, "c")
    assert list(ctx.src_ip_addrs) == ["192.168.7.7/24", "10.60.0.2/32"]
    assert routes(ctx.src_routes) == ["0.0.0.0/0", "10.60.0.1/32"]


def test_fill_adopts_free_addresses_from_the_request_after_restart() -> None:
    ipam = PointToPointIpam(["10.60.0.0/16"])
    ctx = IPContext(src_ip_addrs=["10.60.3.8/32"], dst_ip_addrs=["10.60.3.7/32"])
    got = ipam.fill_ip_context(ctx, "c")
    assert got == Allocation(("10.60.3.8/32",), ("10.60.3.7/32",))
    assert ipam.allocate("other").dst_addrs == ("10.60.0.1/32",)


def test_fill_replaces_addresses_taken_by_another_connection_and_stale_routes() -> None:
    ipam = PointToPointIpam(["10.60.0.0/16"])
    ipam.allocate("owner")  # .1 and .2
    ctx = IPContext(
        src_ip_addrs=["10.60.0.2/32"],
        dst_ip_addrs=["10.60.0.1/32"],
        src_routes=[Route(prefix="10.60.0.1/32")],
        dst_routes=[Route(prefix="10.60.0.2/32"), Route(prefix="10.60.0.0/16")],
    )
    ipam.fill_ip_context(ctx, "thief")
    assert list(ctx.src_ip_addrs) == ["10.60.0.4/32"]
    assert list(ctx.dst_ip_addrs) == ["10.60.0.3/32"]
    assert routes(ctx.src_routes) == ["10.60.0.3/32"]
    assert routes(ctx.dst_routes) == ["10.60.0.4/32"]


def test_the_endpoint_side_is_the_endpoints_alone() -> None:
    """What a client brings for the endpoint's namespace (an address of its choice, a default
    route into its own tunnel) is dropped; the client's own side keeps what it brought."""
    ipam = PointToPointIpam(["10.60.0.0/16"])
    ctx = IPContext(
        src_ip_addrs=["192.168.7.1/32"],
        src_routes=[Route(prefix="172.16.0.0/12")],
        dst_ip_addrs=["192.168.7.7/32"],
        dst_routes=[Route(prefix="0.0.0.0/0"), Route(prefix="10.70.0.0/16")],
    )
    got = ipam.fill_ip_context(ctx, "c")
    assert list(ctx.dst_ip_addrs) == list(got.dst_addrs) == ["10.60.0.1/32"]
    assert routes(ctx.dst_routes) == ["10.60.0.2/32"]
    assert list(ctx.src_ip_addrs) == ["192.168.7.1/32", "10.60.0.2/32"]
    assert routes(ctx.src_routes) == ["172.16.0.0/12", "10.60.0.1/32"]


def test_fill_honours_excluded_prefixes_from_the_request() -> None:
    ipam = PointToPointIpam(["10.60.0.0/16"])
    ctx = IPContext(excluded_prefixes=["10.60.0.0/17"], src_ip_addrs=["10.60.0.9/32"])
    got = ipam.fill_ip_context(ctx, "c")
    for cidr in got.src_addrs + got.dst_addrs:
        assert ipaddress.ip_interface(cidr).ip not in ipaddress.ip_network("10.60.0.0/17")


@pytest.mark.parametrize(
    ("ctx", "field"),
    [
        (IPContext(src_ip_addrs=["10.0.0.1/32", "10.0.0.300/32"]), "ip_context.src_ip_addrs[1]"),
        (IPContext(dst_ip_addrs=["fd00::1/129"]), "ip_context.dst_ip_addrs[0]"),
        (IPContext(excluded_prefixes=["x"]), "ip_context.excluded_prefixes[0]"),
        (IPContext(src_routes=[Route(prefix="1.2.3.4/40")]), "ip_context.src_routes[0]"),
        (
            IPContext(dst_routes=[Route(prefix="1.2.3.0/24", nextHop="gw")]),
            "ip_context.dst_routes[0].nextHop",
        ),
    ],
)
def test_fill_rejects_invalid_input_and_changes_nothing(ctx: IPContext, field: str) -> None:
    ipam = PointToPointIpam(["10.60.0.0/16"])
    before = IPContext()
    before.CopyFrom(ctx)
    with pytest.raises(InvalidArgument) as caught:
        ipam.fill_ip_context(ctx, "c")
    assert caught.value.field == field
    assert ctx == before
    assert ipam.lookup("c") is None


# --- property: random allocate/release sequences keep every invariant ----------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["allocate", "release"]),
        st.integers(0, 7),  # connection id
        st.lists(st.integers(0, 31), max_size=2),  # excluded /32s inside the /27
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_random_sequences_keep_invariants(ops: list[tuple[str, int, list[int]]]) -> None:
    prefix = ipaddress.ip_network("10.9.0.0/27")  # 30 usable addresses: 15 pairs
    ipam = PointToPointIpam([str(prefix)])
    live: dict[str, Allocation] = {}
    for op, n, excluded_hosts in ops:
        conn = f"c{n}"
        if op == "release":
            ipam.release(conn)
            live.pop(conn, None)
            continue
        excluded = [f"{prefix[h]}/32" for h in excluded_hosts]
        before = live.get(conn)
        try:
            got = ipam.allocate(conn, excluded)
        except (ResourceExhausted, InvalidArgument):  # full, or everything free is excluded
            assert ipam.lookup(conn) == before  # unchanged on failure
            continue
        addresses = [ipaddress.ip_interface(a).ip for a in got.src_addrs + got.dst_addrs]
        assert all(a in prefix and a not in (prefix[0], prefix[-1]) for a in addresses)
        assert not {str(a) + "/32" for a in addresses} & set(excluded)
        if before is not None and not set(excluded) & set(before.src_addrs + before.dst_addrs):
            assert got == before  # refresh keeps the pair
        live[conn] = got
        held = [a for alloc in live.values() for a in alloc.src_addrs + alloc.dst_addrs]
        assert len(held) == len(set(held))  # no address shared between connections
        assert ipam.free_addresses(str(prefix)) == 30 - len(held)
