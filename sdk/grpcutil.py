"""The gRPC edge: listen addresses, error ↔ status mapping, call contexts, server lifecycle.

Servers turn :class:`sdk.errors.FabricError` into the status its class names, with the message
unchanged; any other exception becomes INTERNAL with a generic message (the traceback goes to the
log, never to the caller). Clients turn a failed call back into the matching ``FabricError`` so
chains see one exception tree whether an element is local or remote.

A request body gRPC cannot decode is answered by gRPC itself (UNKNOWN, "Error parsing message")
before any fabric code runs; gRPC logs it with a traceback, which anyone able to connect could
use to flood the log. Importing this module installs a filter (:class:`OneLineDecodeErrors`) that
turns those records into one line: a warning naming the method and the parse error.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import grpc
import structlog
from google.protobuf.message import DecodeError

from sdk import errors
from sdk.chain import CallContext
from sdk.security.peer import peer_spiffe_id
from sdk.tracing import TRACE_HEADERS

_log = structlog.get_logger("sdk.grpc")

#: Call headers that carry the route a node manager hands its forwarder: URL, SPIFFE ID and
#: mechanism class of the next hop (:mod:`sdk.networkservice.route`).
ROUTE_HEADERS = ("vwire-route-url", "vwire-route-id", "vwire-route-class")
#: The call headers a chain's elements read (the rest of a call's metadata is not passed in).
CHAIN_HEADERS = frozenset((*TRACE_HEADERS, *ROUTE_HEADERS))

U = TypeVar("U", bound=Callable[..., Awaitable[Any]])
S = TypeVar("S", bound=Callable[..., AsyncIterator[Any]])

_BY_CODE: dict[grpc.StatusCode, type[errors.FabricError]] = {
    cls.code: cls
    for cls in (
        errors.NotFound,
        errors.AlreadyExists,
        errors.PermissionDenied,
        errors.Unauthenticated,
        errors.ResourceExhausted,
        errors.FailedPrecondition,
        errors.Unavailable,
        errors.DeadlineExceeded,
        errors.DataplaneError,
    )
}


#: gRPC's loggers that report an undecodable message with a traceback (aio and sync servers).
DECODE_LOGGERS = ("grpc._cython.cygrpc", "grpc._common")
_SHOWN = 200  # characters of a parse error kept in the line


class OneLineDecodeErrors(logging.Filter):
    """Rewrite gRPC's "cannot decode this message" records into one warning line without the
    traceback; every other record passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, DecodeError):
            return True
        text = record.getMessage()
        method = text.partition("method [")[2].partition("]")[0] or "a method"
        reason = " ".join(str(error).split())[:_SHOWN]
        record.msg = "malformed request to %s refused: %s"
        record.args = (method, reason)
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_decode_errors() -> None:
    """Install :class:`OneLineDecodeErrors` on gRPC's loggers (idempotent)."""
    for name in DECODE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OneLineDecodeErrors) for f in logger.filters):
            logger.addFilter(OneLineDecodeErrors())


quiet_decode_errors()


@dataclass(frozen=True)
class ListenAddress:
    """A parsed ``unix:///path`` or ``tcp://host:port`` address."""

    url: str
    scheme: str
    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def target(self) -> str:
        """The address in gRPC's own syntax (for both servers and channels)."""
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(url: str, field: str = "address") -> ListenAddress:
    """Parse ``unix:///abs/path`` or ``tcp://host:port``; raise InvalidArgument naming ``field``."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed '[' of an IPv6 host
        raise errors.InvalidArgument(field, f"{url!r} is not a valid URL ({exc})") from None
    if parts.scheme == "unix":
        if not parts.path.startswith("/") or parts.netloc:
            raise errors.InvalidArgument(field, f"{url!r}: use unix:///absolute/path.sock")
        return ListenAddress(url, "unix", path=parts.path)
    if parts.scheme == "tcp":
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise errors.InvalidArgument(field, f"{url!r}: use tcp://host:port (port 0 = any)")
        return ListenAddress(url, "tcp", host=parts.hostname, port=port)
    raise errors.InvalidArgument(
        field, f"{url!r} has unknown scheme {parts.scheme!r}: use unix:///path or tcp://host:port"
    )


def call_context(context: grpc.aio.ServicerContext[Any, Any]) -> CallContext:
    """A chain CallContext carrying the RPC's deadline, peer (the SPIFFE ID of an mTLS caller,
    else the transport address) and the headers of :data:`CHAIN_HEADERS` it was sent."""
    remaining = context.time_remaining()
    headers = {
        key: value for key, value in (context.invocation_metadata() or ())
        if key in CHAIN_HEADERS and isinstance(value, str)
    }
    return CallContext.with_timeout(
        remaining, peer=peer_spiffe_id(context) or context.peer() or "", headers=headers
    )


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
    if isinstance(exc, errors.FabricError):
        await context.abort(exc.code, str(exc))
    _log.exception("internal error", error=str(exc))
    await context.abort(grpc.StatusCode.INTERNAL, "internal error: see the server's log")


def unary_edge(method: U) -> U:
    """Decorate a unary servicer method: fabric errors become their gRPC status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, request, context)
        except Exception as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    return cast(U, wrapper)


def stream_edge(method: S) -> S:
    """Decorate a server-streaming servicer method the same way."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for item in method(self, request, context):
                yield item
        except Exception as exc:
            await _abort(context, exc)

    return cast(S, wrapper)


def fabric_error(exc: grpc.aio.AioRpcError) -> errors.FabricError:
    """The FabricError matching a failed call's status (client side)."""
    code = exc.code()
    detail = exc.details() or code.name
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field, _, problem = detail.partition(": ")
        return errors.InvalidArgument(field, problem) if problem else errors.InvalidArgument(
            "request", detail
        )
    if code == grpc.StatusCode.CANCELLED:
        return errors.Unavailable(f"call cancelled: {detail}")
    return _BY_CODE.get(code, errors.FabricError)(detail)


async def serve(
    server: grpc.aio.Server,
    addresses: list[ListenAddress],
    insecure_tcp: bool,
    credentials: grpc.ServerCredentials | None = None,
) -> list[ListenAddress]:
    """Bind every address and start ``server``; returns the addresses with actual TCP ports.

    Unix sockets get their parent directory created, a stale socket file replaced and mode 0660.
    TCP uses ``credentials`` (mTLS, see :func:`sdk.security.tls.server_credentials`) when given,
    else needs ``insecure_tcp`` (the caller says so loudly).
    """
    if credentials is None and not insecure_tcp and (
        tcp := [a for a in addresses if a.scheme == "tcp"]
    ):
        raise errors.FailedPrecondition(
            f"{tcp[0].url}: TCP listeners need mTLS credentials; "
            "pass --insecure to serve plain TCP for development"
        )
    bound: list[ListenAddress] = []
    try:
        for address in addresses:
            if address.scheme == "unix":
                Path(address.path).parent.mkdir(parents=True, exist_ok=True)
                Path(address.path).unlink(missing_ok=True)
                bound.append(address)
                if not server.add_insecure_port(address.target):
                    raise errors.Unavailable(f"{address.url}: cannot bind the socket")
            elif credentials is not None:
                port = server.add_secure_port(address.target, credentials)
                bound.append(ListenAddress(address.url, "tcp", host=address.host, port=port))
            else:
                port = server.add_insecure_port(address.target)
                bound.append(ListenAddress(address.url, "tcp", host=address.host, port=port))
        await server.start()
        for address in bound:
            if address.scheme == "unix":
                os.chmod(address.path, 0o660)
    except BaseException:
        await stop(server, bound, 0)
        raise
    return bound


async def stop(server: grpc.aio.Server, addresses: list[ListenAddress], grace: float) -> None:
    """Stop ``server`` (streams end within ``grace`` seconds) and remove its socket files."""
    await server.stop(grace)
    for address in addresses:
        if address.scheme == "unix":
            Path(address.path).unlink(missing_ok=True)


def unix_socket_accepts(path: Path | str) -> bool:
    """Whether a server listens on the Unix socket at ``path``. The file appears at bind(),
    before listen(); in between (or after a crash) connect() is refused, so a file alone is not
    readiness."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def channel(address: ListenAddress | str) -> grpc.aio.Channel:
    """A plain channel to a unix or tcp address (mTLS channels: :mod:`sdk.security.tls`)."""
    parsed = parse_address(address) if isinstance(address, str) else address
    return grpc.aio.insecure_channel(parsed.target)
