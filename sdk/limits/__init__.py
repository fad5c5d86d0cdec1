"""Limits that keep hostile or runaway input from becoming an outage: message shapes
(:mod:`sdk.limits.shape`) and message size and calls in flight per peer at the gRPC edge
(:mod:`sdk.limits.inflight`)."""

from sdk.limits.inflight import (
    MAX_IN_FLIGHT_PER_PEER,
    MAX_MESSAGE,
    MAX_STREAMS_PER_PEER,
    InFlightLimit,
    limited_server,
    new_server,
)
from sdk.limits.shape import check_connection, check_count, check_request

__all__ = [
    "MAX_IN_FLIGHT_PER_PEER",
    "MAX_MESSAGE",
    "MAX_STREAMS_PER_PEER",
    "InFlightLimit",
    "check_connection",
    "check_count",
    "check_request",
    "limited_server",
    "new_server",
]
