"""UDP ports for WireGuard tunnels, handed out from a configured range.

Contract: ``take(owner)`` returns the same port for the same owner until ``give_back(owner)``;
two owners never hold the same port; an exhausted range raises ResourceExhausted naming the
range and the setting to widen.
"""

from __future__ import annotations

from sdk.errors import InvalidArgument, ResourceExhausted


def parse_range(text: str) -> range:
    """``"51820-52819"`` → the ports, inclusive."""
    first, sep, last = text.partition("-")
    if not sep or not first.isdigit() or not last.isdigit():
        raise InvalidArgument("port_range", f"{text!r}: use first-last, e.g. 51820-52819")
    low, high = int(first), int(last)
    if not 1 <= low <= high <= 65535:
        raise InvalidArgument("port_range", f"{text!r}: ports must be 1-65535, first <= last")
    return range(low, high + 1)


class PortPool:
    """See the module docstring."""

    def __init__(self, ports: range) -> None:
        self.ports = ports
        self._by_owner: dict[str, int] = {}
        self._used: set[int] = set()
        self._next = 0

    def take(self, owner: str) -> int:
        if owner in self._by_owner:
            return self._by_owner[owner]
        for step in range(len(self.ports)):
            port = self.ports[(self._next + step) % len(self.ports)]
            if port not in self._used:
                self._next = (self._next + step + 1) % len(self.ports)
                self._used.add(port)
                self._by_owner[owner] = port
                return port
        raise ResourceExhausted(
            f"all {len(self.ports)} tunnel ports {self.ports.start}-{self.ports.stop - 1} are in "
            "use: widen VWIRE_FORWARDER_PORT_RANGE"
        )

    def give_back(self, owner: str) -> None:
        port = self._by_owner.pop(owner, None)
        if port is not None:
            self._used.discard(port)
