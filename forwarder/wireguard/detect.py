"""Choosing the WireGuard backend and describing it for status output.

Contract:
- :func:`detect_backend` returns the kernel backend when the kernel speaks WireGuard generic
  netlink, else the wireguard-go backend when the binary is on PATH, else raises
  :class:`FailedPrecondition` saying how to fix it. ``prefer`` forces one kind (still checked).
  The choice is logged once per call.
- The wireguard-go backend makes TUNs in workload namespaces itself (``tun_in_netns``) when
  ``wireguard-go --version`` is one it was verified with (``TUN_IN_NETNS_VERSIONS``), else its
  TUNs are moved there.
- :func:`describe` reports kind and version (wireguard-go's ``--version``, or the kernel release).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import structlog

from sdk.errors import FailedPrecondition, InvalidArgument

from .model import WireGuardBackend
from .process import WIREGUARD_GO
from .userspace import TUN_IN_NETNS_VERSIONS, UserspaceBackend

log = structlog.get_logger()

Preference = Literal["auto", "kernel", "wireguard-go"]


@dataclass(frozen=True)
class BackendInfo:
    """What ``nsmctl status`` shows about the data plane."""

    kind: str
    version: str
    binary: str | None = None


async def detect_backend(
    prefer: Preference = "auto",
    *,
    kernel_probe: Callable[[], Awaitable[bool]] | None = None,
    binary: str = WIREGUARD_GO,
    pool_size: int = 0,
    pool_namespaces: int = 0,
    reuse: int = 0,
) -> WireGuardBackend:
    """The best WireGuard backend this host offers (``pool_size``: wireguard-go daemons
    started ahead, ``pool_namespaces``: workload namespaces they are also kept ready in, see
    :mod:`forwarder.wireguard.pool`; ``reuse``: daemons of closed vWires kept for the next
    vWire of their namespace, see :mod:`forwarder.wireguard.recycle`)."""
    if prefer not in ("auto", "kernel", "wireguard-go"):
        raise InvalidArgument("prefer", f"must be auto, kernel or wireguard-go (got {prefer!r})")
    if prefer in ("auto", "kernel"):
        from forwarder.kernel.wireguard import KernelBackend, kernel_wireguard_available

        if await (kernel_probe or kernel_wireguard_available)():
            log.info("wireguard_backend_selected", kind="kernel", reason="kernel module present")
            return KernelBackend()
        if prefer == "kernel":
            raise FailedPrecondition(
                "wireguard backend: the kernel has no WireGuard module (modprobe wireguard), "
                "or choose the wireguard-go backend"
            )
    path = shutil.which(binary)
    if path is None:
        raise FailedPrecondition(
            f"wireguard backend: no kernel WireGuard and no {binary} on PATH: install the "
            "wireguard-go package (apt-get install wireguard-go) or load the wireguard module"
        )
    reason = "forced" if prefer == "wireguard-go" else "kernel module missing"
    version = await wireguard_go_version(binary)
    tun_in_netns = version in TUN_IN_NETNS_VERSIONS
    log.info("wireguard_backend_selected", kind="wireguard-go", binary=path, reason=reason,
             version=version, tun_in_netns=tun_in_netns)
    return UserspaceBackend(binary=binary, pool_size=pool_size, pool_namespaces=pool_namespaces,
                            tun_in_netns=tun_in_netns, reuse=reuse)


async def wireguard_go_version(binary: str = WIREGUARD_GO) -> str:
    """``v0.0.20220316`` from ``wireguard-go --version`` (``unknown`` if it cannot be read)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            binary,
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(5):
            out, _ = await proc.communicate()
    except (OSError, TimeoutError):
        return "unknown"
    match = re.search(r"\bv?\d+\.\d+\.\d+\S*", out.decode("utf-8", "replace"))
    return match.group(0) if match else "unknown"


async def describe(backend: WireGuardBackend) -> BackendInfo:
    """Kind and version of ``backend``."""
    if isinstance(backend, UserspaceBackend):
        return BackendInfo(
            backend.kind, await wireguard_go_version(backend.binary), shutil.which(backend.binary)
        )
    if backend.kind == "kernel":
        return BackendInfo(backend.kind, f"linux {os.uname().release}")
    return BackendInfo(backend.kind, "unknown")
