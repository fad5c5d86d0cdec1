"""A pool of gRPC channels keyed by URL, so every hop reuses one channel per peer.

Contract: ``get(url)`` returns the same channel for the same URL until it is ``drop``-ped (e.g.
after the peer was found dead) or ``forget``-ten (the peer restarted), the pool is ``renew``-ed
(new credentials) or closed; ``close`` closes every channel. Channel credentials come from one
factory, so switching the whole process to mTLS is one argument.

Every channel made here owns its connection (:data:`OWN_CONNECTION`): gRPC otherwise shares one
connection between channels of equal arguments, and equal credentials count as equal, so a
channel made anew after ``forget`` would inherit the old one's reconnect back-off and fail with
the old "connection refused" although the peer is back.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from sdk.grpcutil import ListenAddress, parse_address

ChannelFactory = Callable[[ListenAddress], grpc.aio.Channel]

#: Channel option: a connection of this channel's own, shared with no other channel.
OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)


def insecure_factory(address: ListenAddress) -> grpc.aio.Channel:
    """Plain channels (unix sockets; TCP only for development, in processes run without SVIDs)."""
    return grpc.aio.insecure_channel(address.target, options=[OWN_CONNECTION])


class ChannelPool:
    """See the module docstring."""

    def __init__(self, factory: ChannelFactory = insecure_factory) -> None:
        self._factory = factory
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._retired: list[grpc.aio.Channel] = []

    def get(self, url: str) -> grpc.aio.Channel:
        """The channel to ``url`` (``unix:///path`` or ``tcp://host:port``), made on first use."""
        channel = self._channels.get(url)
        if channel is None:
            channel = self._factory(parse_address(url, "url"))
            self._channels[url] = channel
        return channel

    async def drop(self, url: str) -> None:
        """Close and forget the channel to ``url`` (the next ``get`` makes a new one)."""
        channel = self._channels.pop(url, None)
        if channel is not None:
            await channel.close()

    def forget(self, url: str) -> None:
        """Make a new channel to ``url`` on the next ``get``: a peer that restarted is reached
        at once rather than after the old channel's reconnect back-off. Calls under way finish
        on the old channel, which is closed with the pool."""
        channel = self._channels.pop(url, None)
        if channel is not None:
            self._retired.append(channel)

    def renew(self) -> None:
        """Make new channels from now on (e.g. with a rotated certificate); calls already under
        way finish on the old ones, which are closed with the pool. Safe from any thread."""
        self._retired.extend(self._channels.values())
        self._channels = {}

    async def close(self) -> None:
        """Close every channel."""
        channels = [*self._channels.values(), *self._retired]
        self._channels, self._retired = {}, []
        for channel in channels:
            await channel.close()
