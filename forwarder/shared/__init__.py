"""Shared WireGuard devices: one device per (other node, address space) instead of one per
vWire, the connections told apart by policy routing in a namespace of their own.

:mod:`forwarder.shared.devices` runs the devices and the namespace, :mod:`forwarder.shared.spaces`
decides which connections may share a device, :mod:`forwarder.shared.vwire` programs one
connection's side. docs/dataplane.md explains when to choose it.
"""

from __future__ import annotations

from .devices import MAX_SPACES, SharedDevices
from .spaces import Selectors, choose_space, clash
from .vwire import SharedPeerSpec, SharedVWireSpec, program_shared

__all__ = [
    "MAX_SPACES",
    "Selectors",
    "SharedDevices",
    "SharedPeerSpec",
    "SharedVWireSpec",
    "choose_space",
    "clash",
    "program_shared",
]
