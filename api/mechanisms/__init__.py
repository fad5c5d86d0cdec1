"""Typed views of NSM mechanism parameter maps, so nobody reads string keys by hand.

Classes: ``LOCAL`` (same node) and ``REMOTE`` (between nodes). Types: ``KERNEL``
(:mod:`api.mechanisms.kernel`) and ``WIREGUARD`` (:mod:`api.mechanisms.wireguard`).
"""

from __future__ import annotations

from api.proto.connection_pb2 import Mechanism

LOCAL = "LOCAL"
REMOTE = "REMOTE"


def of_class(mechanisms: list[Mechanism], cls: str) -> list[Mechanism]:
    """The mechanisms of one class, in preference order."""
    return [m for m in mechanisms if m.cls == cls]


__all__ = ["LOCAL", "REMOTE", "of_class"]
