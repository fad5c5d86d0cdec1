"""Measuring how long a client's connection takes to heal after a fault.

:func:`measure_heal` records the client's connection, injects the fault (e.g. SIGKILL an endpoint,
or SIGKILL and start again a forwarder — without waiting for it), then polls until the client
reports a *healed* connection (its heal count went up: a heal may rebuild the path with new ids
or update the hops that still hold it in place) **and** one ICMP echo over it to the endpoint's
current address is answered. The heal time is from just before the fault to that reply.
Polling is bounded by ``timeout`` (DeadlineExceeded naming what was last seen).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.fabric import Client
from lab.observe import endpoint_address, path_ids, ping, wait_for
from sdk.errors import DeadlineExceeded, FailedPrecondition


@dataclass(frozen=True)
class Heal:
    """The outcome of one measured heal."""

    seconds: float
    before: dict[str, Any]
    after: dict[str, Any]


async def measure_heal(
    client: Client,
    fault: Callable[[], object],
    *,
    service: str | None = None,
    timeout: float = 15.0,
    ping_wait: float = 0.1,
) -> Heal:
    """Inject ``fault`` and time the heal of ``client``'s connection (see the module docstring)."""
    before = client.connection(service)
    if not before:
        raise FailedPrecondition(f"client {client.process} has no connection to heal")
    heals = client.heals(service)
    seen: dict[str, Any] = {}

    async def healed() -> bool:
        conn = client.connection(service)
        seen.clear()
        seen.update(conn)
        if not conn or client.heals(service) == heals:
            return False
        return await ping(client.netns, endpoint_address(conn), wait=ping_wait)

    start = time.monotonic()
    fault()
    try:
        await wait_for(f"heal of {client.process}'s connection", healed, timeout, every=0.01)
    except DeadlineExceeded as exc:
        exc.add_note(f"last connection seen: path {path_ids(seen)} "
                     f"endpoint {seen.get('network_service_endpoint_name')!r}")
        raise
    return Heal(time.monotonic() - start, before, dict(seen))
