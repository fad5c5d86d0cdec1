"""The netlink kernel port's ioctl reads (interface index by name, MTU) answer for the namespace
they are asked about, not the forwarder's own (root, real namespaces)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from forwarder.kernel import real_kernel
from sdk.errors import NotFound

from .conftest import netns_path, run


async def test_mtu_and_index_are_read_in_the_named_namespace(
    netns: Callable[[str], str],
) -> None:
    kernel = real_kernel()
    name_a = netns("ma")
    a, b = netns_path(name_a), netns_path(netns("mb"))
    run("ip", "link", "add", "pad0", "type", "veth", "peer", "name", "pad1",
        netns=name_a)  # indexes taken in a only
    # the same name in both namespaces (and none here), with different MTUs and indexes
    await kernel.create_veth("m0", a, "m0", b)
    await kernel.set_link(a, "m0", mtu=1300)
    await kernel.set_link(b, "m0", mtu=1280)
    assert await kernel.link_mtu(a, "m0") == 1300
    assert await kernel.link_mtu(b, "m0") == 1280
    assert await kernel.link_mtu(a, "lo") == 65536
    with pytest.raises(OSError):
        socket.if_nametoindex("m0")  # not in this process's namespace
    with pytest.raises(NotFound, match="pad0 does not exist"):
        await kernel.link_mtu(b, "pad0")
    with pytest.raises(NotFound, match="nope0 does not exist"):
        await kernel.set_link(b, "nope0", mtu=1400)
    # operations by name reach the namespace's own link (found by index there)
    await kernel.set_link(b, "m0", alias="vwire:ioctl")
    assert (await kernel.get_link(b, "m0")).alias == "vwire:ioctl"
    assert (await kernel.get_link(a, "m0")).alias != "vwire:ioctl"
    index_a = (await kernel.get_link(a, "m0")).index
    index_b = (await kernel.get_link(b, "m0")).index
    assert index_a != index_b  # each looked up in its own namespace
    await kernel.delete_link(a, "m0")
    with pytest.raises(NotFound):
        await kernel.link_mtu(b, "m0")  # the veth's other end went with it
