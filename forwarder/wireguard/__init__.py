"""WireGuard backends for the forwarder: the kernel module or wireguard-go, chosen automatically.

Modules, one job each: :mod:`.keys` (X25519 keys, redacted private keys), :mod:`.model` (the
interface and its values), :mod:`.uapi` (our UAPI client), :mod:`.netns` (setns without forking),
:mod:`.links` (rtnetlink link operations), :mod:`.process` (one wireguard-go daemon),
:mod:`.userspace` (the supervised wireguard-go backend), :mod:`.kernel` (the kernel backend),
:mod:`.detect` (choice and status).
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
