"""WireGuard backends for the forwarder: the kernel module or wireguard-go, chosen automatically.

Modules, one job each: :mod:`.keys` (X25519 keys, redacted private keys), :mod:`.model` (the
interface and its values), :mod:`.uapi` (our UAPI client), :mod:`.netns` (namespace paths,
generic-netlink sockets), :mod:`.process` (one wireguard-go daemon), :mod:`.userspace` (the
supervised wireguard-go backend), :mod:`.kernel` (the kernel backend), :mod:`.detect` (choice
and status). Links are moved and deleted through the kernel port (:mod:`forwarder.kernel`).
"""

from .detect import BackendInfo, describe, detect_backend
from .kernel import KernelBackend
from .keys import PrivateKey, generate_keypair
from .model import WgPeer, WgPeerStats, WgProcessEvent, WireGuardBackend
from .userspace import RestartPolicy, UserspaceBackend

__all__ = [
    "BackendInfo",
    "KernelBackend",
    "PrivateKey",
    "RestartPolicy",
    "UserspaceBackend",
    "WgPeer",
    "WgPeerStats",
    "WgProcessEvent",
    "WireGuardBackend",
    "describe",
    "detect_backend",
    "generate_keypair",
]
