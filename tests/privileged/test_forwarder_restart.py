"""wireguard-go restart recovery through the real forwarder chains (``forwarder.restart``).

A remote connection is made with the two forwarder chains of
:mod:`tests.privileged.test_forwarder_chain`, each with a :class:`RestartRecovery`; its
wireguard-go daemon (whose interface is renamed ``nsm0`` in the client's namespace) is SIGKILLed
or SIGTERMed. Restarted: the vWire is restored in place, under the name the workload sees, and
traffic flows again within a bounded time. Not restartable, or not restorable (the workload's
name taken meanwhile): the vWire is set aside once, reported, and the connection's next request
rebuilds it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from forwarder.kernel import real_kernel
from forwarder.vwire import find_leftovers
from forwarder.wireguard import RestartPolicy, UserspaceBackend, WgProcessEvent
from forwarder.xconnect import LOST

from .conftest import netns_path, run
from .test_forwarder_chain import Forwarder, Remote, client_request, remote_forwarders
from .test_forwarder_chain import backend as backend  # fixture
from .test_forwarder_chain import lab as lab  # fixture
from .test_forwarder_chain import remote as remote  # fixture (chains with restart recovery)
from .test_vwire_local import kernel_state, ping
from .test_vwire_remote import Lab, wait_until

RECOVERY_LIMIT = 10.0  # seconds from SIGKILL to traffic flowing again


def kill_daemon(
    backend: UserspaceBackend, side: Forwarder, sig: int = signal.SIGKILL
) -> tuple[str, int]:
    """Send ``sig`` to the wireguard-go of ``side``'s only vWire; its name and old pid."""
    (wg_name,) = side.live_names()
    pid = backend.pid(wg_name)
    assert pid is not None
    os.kill(pid, sig)
    return wg_name, pid


async def traffic_within(lab: Lab, limit: float) -> float:
    """Seconds until a ping client → endpoint is answered (fails after ``limit``)."""
    start = time.monotonic()
    for _ in range(int(limit * 10)):  # bounded in count; each failed ping waits ~1 s
        if ping(lab.client, "172.16.0.2") == "ok":
            return time.monotonic() - start
        if time.monotonic() - start > limit:
            break
    pytest.fail(f"no traffic within {limit} s")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_ended_wireguard_go_is_restored_and_traffic_flows_again(
    lab: Lab, remote: Remote, backend: UserspaceBackend, sig: int
) -> None:
    names = (lab.node_a, lab.node_b, lab.client, lab.endpoint)
    before = kernel_state(*names)
    a = remote.client_side
    conn = await a.chain.run_request(client_request(lab))
    try:
        assert ping(lab.client, "172.16.0.2") == "ok"
        vwire = a.vwire(conn)
        killed_at = time.monotonic()
        wg_name, old_pid = kill_daemon(backend, a, sig)
        assert a.recovery is not None
        assert await wait_until(lambda: a.recovery is not None and a.recovery.restored == 1,
                                RECOVERY_LIMIT)
        await traffic_within(lab, RECOVERY_LIMIT - (time.monotonic() - killed_at))
        assert backend.pid(wg_name) not in (None, old_pid)
        link = run("ip", "-o", "addr", "show", "nsm0", netns=lab.client).stdout
        assert "172.16.0.1/32" in link
        shown = run("ip", "-d", "link", "show", "nsm0", netns=lab.client).stdout
        assert "mtu 1440" in shown and f"wg={wg_name}" in shown and ",UP" in shown
        assert backend.daemon_mtu(wg_name) == 1440  # the new daemon pads to the vWire's MTU
        assert "172.16.0.2 dev nsm0" in run("ip", "route", netns=lab.client).stdout
        again = await a.chain.run_request(client_request(lab, conn))
        assert a.vwire(again) is vwire  # restored in place: a refresh changes nothing
    finally:
        await a.chain.run_close(conn)
    assert kernel_state(*names) == before
    assert not await find_leftovers(real_kernel(), [netns_path(n) for n in names])


async def test_unrestartable_daemon_is_rebuilt_by_the_next_request(
    lab: Lab, tmp_path: Path
) -> None:
    names = (lab.node_a, lab.node_b, lab.client, lab.endpoint)
    before = kernel_state(*names)
    broken = tmp_path / "broken"
    wrapper = tmp_path / "wireguard-go"  # wireguard-go, unless the flag file exists
    wrapper.write_text(f'#!/bin/sh\n[ -e {broken} ] && exit 1\nexec wireguard-go "$@"\n')
    wrapper.chmod(0o755)
    backend = UserspaceBackend(binary=str(wrapper), restart=RestartPolicy(2, 0.05))
    fabric = remote_forwarders(lab, backend, recover=True)
    a = fabric.client_side
    try:
        conn = await a.chain.run_request(client_request(lab))
        try:
            assert ping(lab.client, "172.16.0.2") == "ok"
            broken.touch()
            kill_daemon(backend, a)
            md = a.metadata.get(conn.id)
            assert md is not None
            assert await wait_until(lambda: LOST in md, RECOVERY_LIMIT)
            assert a.live_names() == []
            broken.unlink()
            again = await a.chain.run_request(client_request(lab, conn))
            assert LOST not in md and len(a.live_names()) == 1
            assert again.context.MTU == 1440
            await traffic_within(lab, RECOVERY_LIMIT)
        finally:
            await a.chain.run_close(conn)
    finally:
        for side in (fabric.client_side, fabric.endpoint_side):
            assert side.recovery is not None
            await side.recovery.close()
        await backend.close()
    assert kernel_state(*names) == before
    assert not await find_leftovers(real_kernel(), [netns_path(n) for n in names])


async def test_unrestorable_vwire_is_given_up_once_and_rebuilt_by_the_next_request(
    lab: Lab, remote: Remote, backend: UserspaceBackend
) -> None:
    names = (lab.node_a, lab.node_b, lab.client, lab.endpoint)
    before = kernel_state(*names)
    a = remote.client_side
    conn = await a.chain.run_request(client_request(lab))
    blocker = False

    def take_the_name(event: WgProcessEvent) -> None:
        nonlocal blocker  # the old TUN is gone with its daemon, the new one not moved back yet
        if event.kind == "exited" and not blocker:
            run("ip", "link", "add", "nsm0", "type", "veth", "peer", "name", "nsm0b",
                netns=lab.client)
            blocker = True

    unsubscribe = backend.subscribe(take_the_name)
    try:
        assert ping(lab.client, "172.16.0.2") == "ok"
        kill_daemon(backend, a)
        md = a.metadata.get(conn.id)
        assert md is not None and a.recovery is not None
        assert await wait_until(lambda: LOST in md, RECOVERY_LIMIT)
        assert (a.recovery.lost, a.recovery.restored, a.live_names()) == (1, 0, [])
        unsubscribe()
        run("ip", "link", "del", "nsm0b", netns=lab.client)  # the name is free again
        again = await a.chain.run_request(client_request(lab, conn))
        assert LOST not in md and len(a.live_names()) == 1 and again.context.MTU == 1440
        await traffic_within(lab, RECOVERY_LIMIT)
        assert "172.16.0.1/32" in run("ip", "-o", "addr", "show", "nsm0", netns=lab.client).stdout
    finally:
        if blocker:
            run("ip", "link", "del", "nsm0b", netns=lab.client, check=False)
        await a.chain.run_close(conn)
    assert kernel_state(*names) == before
    assert not await find_leftovers(real_kernel(), [netns_path(n) for n in names])
