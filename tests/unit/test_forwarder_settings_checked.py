"""A forwarder refuses a bad setting at start, before it changes anything on the host."""

from __future__ import annotations

import pytest

from forwarder.app import Forwarder
from forwarder.kernel import FakeKernel
from forwarder.settings import ForwarderSettings
from forwarder.wireguard.fake import FakeWireGuard
from sdk.errors import InvalidArgument


async def test_a_negative_linger_is_refused_before_anything_is_done() -> None:
    kernel = FakeKernel()
    forwarder = Forwarder(ForwarderSettings(name="fwd-bad", wireguard_device="shared",
                                            wireguard_device_linger=-1.0),
                          kernel, FakeWireGuard(kernel))  # type: ignore[arg-type]
    before = kernel.snapshot()
    with pytest.raises(InvalidArgument, match="wireguard_device_linger"):
        await forwarder.start()
    assert kernel.calls == [] and kernel.snapshot() == before
