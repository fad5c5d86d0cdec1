"""WireGuard backends for the forwarder: the kernel module or wireguard-go, chosen automatically.

Modules, one job each: :mod:`.keys` (X25519 keys, redacted private keys), :mod:`.model` (the
interface and its values), :mod:`.uapi` (our UAPI client), :mod:`.netns` (namespace paths,
generic-netlink sockets), :mod:`.process` (one wireguard-go daemon), :mod:`.userspace` (the
supervised wireguard-go backend), :mod:`.detect` (choice and status). The kernel backend talks
netlink, so it lives with the kernel port (:mod:`forwarder.kernel.wireguard`) and is imported
only when the kernel has WireGuard. Links are moved and deleted through the kernel port
(:mod:`forwarder.kernel`).
"""

from .detect import BackendInfo, describe, detect_backend
from .keys import PrivateKey, generate_keypair
from .model import WgPeer, WgPeerStats, WgProcessEvent, WireGuardBackend
from .process import clear_stale_socket
from .uapi import socket_path
from .userspace import RestartPolicy, UserspaceBackend

__all__ = [
    "BackendInfo",
    "PrivateKey",
    "RestartPolicy",
    "UserspaceBackend",
    "WgPeer",
    "WgPeerStats",
    "WgProcessEvent",
    "WireGuardBackend",
    "clear_stale_socket",
    "describe",
    "detect_backend",
    "generate_keypair",
    "socket_path",
]
