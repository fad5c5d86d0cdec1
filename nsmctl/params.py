"""Checks of option values, shared by every command: a bad value is a usage error.

Each function is a typer ``callback``: it returns the value when it is good and otherwise raises
:class:`typer.BadParameter`, which the root command (:mod:`nsmctl.app`) reports as
``error: Invalid value for '--OPTION': ...`` with exit code 2, the option named. Use them as
``typer.Option("--nsmgr", callback=params.address)``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Callable
from pathlib import Path

import typer

from sdk.errors import InvalidArgument
from sdk.grpcutil import parse_address
from sdk.security.spiffe import SpiffeId

NETNS_DIR = Path("/var/run/netns")
_NS_GET_NSTYPE = 0xB703  # ioctl on a namespace file: which kind of namespace it is
_CLONE_NEWNET = 0x40000000
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The longest duration an option accepts (a ten-year root CA lifetime fits).
MAX_DURATION = 3660 * 86400


def address(value: str) -> str:
    """A gRPC address: ``unix:///path.sock`` or ``tcp://host:port``."""
    try:
        parse_address(value)
    except InvalidArgument as exc:
        raise typer.BadParameter(exc.problem) from None
    return value


def spiffe_id(value: str) -> str:
    """A SPIFFE ID, ``spiffe://TRUST-DOMAIN/PATH`` (empty: not given)."""
    if not value:
        return value
    try:
        SpiffeId.parse(value)
    except InvalidArgument as exc:
        raise typer.BadParameter(f"{exc.problem} (e.g. spiffe://example.org/nsmgr/node-1)"
                                 ) from None
    return value


def duration(value: str) -> str:
    """A duration such as ``90s``, ``30m``, ``1h`` or ``7d``, more than 0 and at most
    :data:`MAX_DURATION`; see :func:`seconds` for its value."""
    seconds(value)
    return value


def seconds(text: str, at_most: float = MAX_DURATION) -> float:
    """The seconds of a duration (:func:`duration`'s rules, at most ``at_most``), BadParameter
    when it breaks them."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration: use e.g. 90s, 30m, 1h, 7d")
    value = float(match[1]) * _UNITS[match[2]]
    if not 0 < value <= at_most:
        raise typer.BadParameter(f"{text!r} is out of range: more than 0s, at most "
                                 f"{at_most / 86400:g}d")
    return value


def duration_at_most(limit: float) -> Callable[[str], str]:
    """Like :func:`duration`, for an option whose values may not exceed ``limit`` seconds."""

    def check(value: str) -> str:
        seconds(value, limit)
        return value

    return check


def netns_path(value: str) -> str:
    """A network namespace by name (``ip netns list``) or path (``/var/run/netns/NAME``,
    ``/proc/PID/ns/net``); returns its path."""
    path = Path(value) if value.startswith("/") else NETNS_DIR / value
    hint = ("give a name from 'ip netns list' or a path such as /var/run/netns/NAME or "
            "/proc/PID/ns/net")
    if not path.exists():
        raise typer.BadParameter(f"network namespace {value!r} does not exist: {hint}")
    kind = None
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            kind = fcntl.ioctl(fd, _NS_GET_NSTYPE)
        finally:
            os.close(fd)
    if kind != _CLONE_NEWNET:
        raise typer.BadParameter(f"{value!r} is not a network namespace: {hint}")
    return str(path)


SVID_FILES = ("svid.crt", "svid.key", "bundle.pem")


def svid_dir(value: str) -> str:
    """A directory holding an SVID (``svid.crt``, ``svid.key``, ``bundle.pem``); empty: none."""
    if not value:
        return value
    path = Path(value)
    hint = "issue one with 'nsmctl ca issue --spiffe-id ID --out DIR'"
    if not path.is_dir():
        raise typer.BadParameter(f"{value!r} is not a directory: {hint}")
    missing = [name for name in SVID_FILES if not (path / name).is_file()]
    if missing:
        raise typer.BadParameter(f"{value!r} has no {', '.join(missing)}: {hint}")
    return value
