"""sdk.netns.socket_in_fd against the real kernel: the thread that makes a socket in another
namespace holds no descriptor of it once its caller resumes."""

from __future__ import annotations

import os
import socket
import time

import pytest

import sdk.netns
from sdk.errors import DataplaneError

pytestmark = pytest.mark.privileged


@pytest.mark.parametrize("fails", [False, True])
async def test_a_socket_made_in_a_namespace_leaves_no_descriptor_once_its_caller_resumes(
    fails: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread that makes the socket closes its copy of the namespace's descriptor before it
    hands the socket (or the error) back, however slowly that close runs."""
    real_close = os.close

    def slow_close(fd: int) -> None:
        time.sleep(0.2)
        real_close(fd)

    def make() -> socket.socket:
        if fails:
            raise OSError(22, "refused by the test")
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        before = set(os.listdir("/proc/self/fd"))
        monkeypatch.setattr(sdk.netns.os, "close", slow_close)
        try:
            made = await sdk.netns.socket_in_fd(fd, make)
        except DataplaneError:  # handed back; the descriptors are what counts here
            made = None
        monkeypatch.undo()
        left = set(os.listdir("/proc/self/fd")) - before
        if made is not None:
            left.discard(str(made.fileno()))
            made.close()
        assert left == set()
        assert (made is None) == fails
    finally:
        os.close(fd)
