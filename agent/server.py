"""The agent's unix-socket server: one request per connection, answered with the caller's SVID.

Contract: :class:`AgentServer` listens on ``socket`` (mode 0666, its directory created 0755 when
missing; a stale socket file is replaced), reads one framed request (:mod:`sdk.security.workload`)
within :data:`READ_TIMEOUT` seconds, attests the caller by its peer credentials
(:mod:`agent.attest`) and answers with a fresh SVID for ``spiffe://<td>/ns/<ns>/sa/<sa>`` signed
by the CA, valid ``ttl`` seconds, with the CA's bundle and the bundles of the trust domains it
federates with (re-read from the CA's ``federated/`` on every answer, so ``nsmctl ca federate``
reaches workloads at their next renewal), or with an error naming why not. Private keys go to
the caller only, never to a log or a file. :meth:`stop` closes the server and removes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import structlog

from agent.attest import PodResolver, attest, peer_of
from sdk.errors import FabricError, FailedPrecondition, InvalidArgument
from sdk.security.ca import CertificateAuthority
from sdk.security.svid import TrustBundle
from sdk.security.workload import OP_X509, decode_length, encode

READ_TIMEOUT = 5.0
_log = structlog.get_logger("agent")


class AgentServer:
    """See the module docstring."""

    def __init__(self, path: Path, ca: CertificateAuthority, pods: PodResolver,
                 ttl: float = 600.0, nsmgr_id: str = "") -> None:
        self.path = path
        self.ca = ca
        self.pods = pods
        self.ttl = ttl
        self.nsmgr_id = nsmgr_id
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise FailedPrecondition(f"{self.path} exists and is not a socket: remove it or "
                                         "choose another --socket")
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o666)  # anyone may ask; the kernel says who asked
        _log.info("serving", socket=str(self.path), trust_domain=self.ca.trust_domain)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def answer(self, sock: socket.socket, request: Any) -> dict[str, Any]:
        """The answer to ``request`` from the peer of ``sock`` (raises FabricError)."""
        if not isinstance(request, dict) or request.get("op") != OP_X509:
            raise InvalidArgument("op", f"unknown request: send {{\"op\": \"{OP_X509}\"}}")
        peer = peer_of(sock)
        try:
            pod = attest(peer, self.pods)
        finally:
            os.close(peer.pidfd)
        spiffe_id = pod.spiffe_id(self.ca.trust_domain)
        svid = self.ca.issue(spiffe_id, ttl=self.ttl)
        _log.info("svid issued", spiffe_id=str(spiffe_id), pod=f"{pod.namespace}/{pod.name}",
                  pid=peer.pid, serial=f"{svid.serial:x}", not_after=svid.not_after)
        return {
            "spiffe_id": str(spiffe_id), "svid_pem": svid.chain_pem().decode(),
            "key_pem": svid.key_pem().decode(), "bundle_pem": self.ca.bundle.pem().decode(),
            "federated_bundles": {b.trust_domain: b.pem().decode() for b in self._federated()},
            "expires_at": svid.not_after,
            "hints": {"nsmgr_id": self.nsmgr_id} if self.nsmgr_id else {},
        }

    def _federated(self) -> tuple[TrustBundle, ...]:
        """The CA's federated bundles as its directory holds them now; a broken file keeps the
        previous ones (logged)."""
        try:
            return self.ca.reload_federated()
        except FabricError as exc:
            _log.warning("federated bundles unreadable, keeping the previous ones",
                         error=str(exc))
            return self.ca.federated

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock: socket.socket = writer.get_extra_info("socket")
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                length = decode_length(await reader.readexactly(4))
                request = json.loads(await reader.readexactly(length))
            reply = await asyncio.to_thread(self.answer, sock, request)
        except FabricError as exc:
            _log.warning("request refused", error=str(exc))
            reply = {"error": str(exc), "code": type(exc).__name__}
        except (TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            reply = {"error": f"bad request: {exc or type(exc).__name__}",
                     "code": "InvalidArgument"}
        try:
            writer.write(encode(reply))
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
