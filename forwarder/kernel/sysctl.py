"""Tunnel ports kept out of the kernel's automatic port choice (``ip_local_reserved_ports``).

A socket bound to port 0 gets a port from the namespace's ephemeral range
(``net.ipv4.ip_local_port_range``, 32768-60999 by default), which contains the forwarder's
tunnel range (51820-52819 by default). A fresh wireguard-go binds port 0 until it is told its
port, so it could take a tunnel port another vWire is about to ask for ("address in use").
Contract of :func:`reserve_ports`:

- adds ``ports`` to ``net.ipv4.ip_local_reserved_ports`` of the namespace ``netns`` (``None``:
  the forwarder's own; the setting is per namespace and covers IPv6 too), keeping the entries
  already there; a range already covered is left alone. Reserved ports can still be bound by
  number, which is how tunnels bind them; they are only never chosen for port 0.
- returns True when it changed the setting. A namespace path is opened through ``guard``
  like every other kernel call, and the file is written from a short-lived thread that joined
  that namespace. Failure to write raises :class:`FailedPrecondition` naming the setting.
- The reservation stays with the namespace after the forwarder stops (a restarted forwarder
  finds it in place); it changes nothing but the automatic choice.

:func:`in_namespace` runs any such /proc/sys job in a namespace the same way, and
:func:`write_sysctls` is the job that sets a few settings (the shared-device namespace's
forwarding, :mod:`forwarder.shared`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Mapping
from typing import TypeVar

from sdk.errors import FailedPrecondition, InvalidArgument
from sdk.netns import setns

from .netns import NamespaceGuard
from .port import Netns

T = TypeVar("T")
RESERVED_PORTS = "/proc/sys/net/ipv4/ip_local_reserved_ports"
SETTING = "net.ipv4.ip_local_reserved_ports"


def parse_reserved(text: str) -> list[range]:
    """``"51820-52819,8080"`` → the ranges (inclusive ends); empty text → none."""
    ranges = []
    for part in text.replace("\n", "").split(","):
        part = part.strip()
        if not part:
            continue
        first, _, last = part.partition("-")
        if not first.isdigit() or not (last or first).isdigit():
            raise InvalidArgument(SETTING, f"cannot read {part!r} (expected N or N-M)")
        ranges.append(range(int(first), int(last or first) + 1))
    return ranges


def _covered(ports: range, ranges: list[range]) -> bool:
    reserved: set[int] = set()
    for entry in ranges:
        reserved.update(entry)
    return all(port in reserved for port in ports)


def _reserve_here(ports: range) -> bool:
    with open(RESERVED_PORTS, encoding="ascii") as current:
        text = current.read().strip()
    if _covered(ports, parse_reserved(text)):
        return False
    wanted = f"{ports.start}-{ports.stop - 1}"
    try:
        with open(RESERVED_PORTS, "w", encoding="ascii") as out:
            out.write(f"{text},{wanted}" if text else wanted)
    except OSError as err:
        raise FailedPrecondition(
            f"{SETTING}: cannot reserve the tunnel ports {wanted} ({err.strerror}); the "
            f"forwarder needs a writable /proc/sys/net (or set {SETTING} in the node's "
            "namespace beforehand)"
        ) from None
    return True


def _run_in(fd: int, job: Callable[[], T]) -> T:
    try:
        setns(fd)  # this thread is discarded afterwards
    finally:
        os.close(fd)
    return job()


async def in_namespace(
    netns: Netns, job: Callable[[], T], guard: NamespaceGuard | None = None
) -> T:
    """Run ``job`` (file access under /proc/sys) in ``netns`` (None: right here), from a
    short-lived thread that joined that namespace; the path is opened through ``guard``."""
    if netns is None:
        return job()
    fd = (guard or NamespaceGuard()).open(netns, "netns")
    try:
        # A dedicated thread, not the default executor's: it never returns to our namespace.
        loop = asyncio.get_running_loop()
        result: asyncio.Future[T] = loop.create_future()

        own = os.dup(fd)  # the thread's: a cancelled caller closes ``fd`` at once

        def run() -> None:
            try:
                value = _run_in(own, job)
            except BaseException as exc:  # handed to the awaiting coroutine
                loop.call_soon_threadsafe(_settle, result, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, result, value, None)

        threading.Thread(target=run, name="vwire-sysctl", daemon=True).start()
        return await result
    finally:
        os.close(fd)


async def reserve_ports(netns: Netns, ports: range, guard: NamespaceGuard | None = None) -> bool:
    """Reserve ``ports`` in ``netns`` (see the module docstring); True if the setting changed."""
    return await in_namespace(netns, lambda: _reserve_here(ports), guard)


def write_sysctls(values: Mapping[str, str]) -> None:
    """Write ``values`` (``net.ipv4.ip_forward`` -> ``1``) under /proc/sys of this thread's
    namespace; FailedPrecondition names a setting that cannot be written."""
    for key, value in values.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w", encoding="ascii") as out:
                out.write(value)
        except OSError as err:
            raise FailedPrecondition(f"{key}: cannot set it to {value} ({err.strerror})") from None


def _settle(future: asyncio.Future[T], value: T | None, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)  # type: ignore[arg-type]
