"""Registry store on an etcd v3 cluster (``etcd://host:port[,host:port...][/prefix]``).

Contract (see :class:`sdk.registry.store.SharedStore`; several registry replicas share one):

- Records are keys ``<prefix>/<kind>/<name>`` (prefix ``/vwire/registry`` unless the URL gives a
  path), each value a JSON envelope ``{"data": base64, "expires_at": unix | null, "owner": ...}``,
  so the owner is written with the record in the same Put.
- A record with an expiry is attached to the etcd lease of its expiry second
  (``ceil(expires_at) + LEASE_SLACK``), granted once per second and shared by every record that
  expires then, so it disappears even when no registry replica runs, and a registration costs one
  Put (a record refreshed moves to a later second's lease; leases are never revoked, they end at
  their second). A Put refused because its lease is gone is retried once on a new grant. The
  expiry itself is exact:
  ``load``/``snapshot`` filter on ``expires_at`` and the replicas' sweepers unregister the record
  at that instant (watchers see it deleted then); the slack keeps the lease a backstop that
  fires only when no replica did.
- ``changes`` runs one etcd watch over the whole prefix from a revision; etcd's deletions by
  lease expiry arrive like any other deletion. When the watch breaks (the member it was on died)
  it is opened again, on any member, from the revision after the last change it yielded, so no
  change is lost or repeated; a compacted start revision raises
  :class:`~sdk.registry.store.HistoryLost`.
- Every call goes to any member that is up (gRPC ``round_robin`` over all the addresses, host
  names resolved once when the store is opened); each attempt has ``ATTEMPT_TIMEOUT`` seconds,
  and one refused for a transient reason (UNAVAILABLE: member down, leader changed, no leader
  yet; or no answer in time: a request lost with a dead leader) is retried with backoff for up
  to ``retry_for`` seconds, then raises :class:`~sdk.errors.Unavailable` naming the store.
  Writes are idempotent, so a retried Put whose first attempt landed does no harm; a retried
  delete whose first attempt landed reports that nothing was stored.
- TLS: given a directory with ``ca.crt``, ``tls.crt`` and ``tls.key`` (a Kubernetes TLS secret's
  layout; the registry's ``etcd_tls_dir``), the store verifies etcd's certificate against
  ``ca.crt`` for the first host name of the URL and authenticates with its client certificate;
  missing or unreadable files raise FailedPrecondition naming the file. The files are read once,
  when the store opens (restart the registry to take new ones).
- ``close`` is idempotent; other calls after it raise FailedPrecondition.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import SplitResult

import grpc
import structlog
from aetcd import rpc

from sdk.errors import FailedPrecondition, Unavailable
from sdk.registry.store import Change, HistoryLost, StaleWrite, StoredRecord

T = TypeVar("T")

DEFAULT_PREFIX = "/vwire/registry"
RETRY_FOR = 10.0
#: One attempt's deadline: a request a follower forwarded to a leader that just died would
#: otherwise wait for etcd's own request timeout (5 s + 2 election timeouts) before failing.
ATTEMPT_TIMEOUT = 1.0
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
LEASE_SLACK = 2
_CHANNEL_OPTIONS = (
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", 10_000),  # etcd refuses pings more often than every 5 s
    ("grpc.keepalive_timeout_ms", 3_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)

_log = structlog.get_logger("registry.etcd")


def _range_end(prefix: bytes) -> bytes:
    """The end of etcd's key range holding every key that starts with ``prefix``."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _hostport(item: str, url: str) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"etcd endpoint {item!r} is not host:port (e.g. etcd://127.0.0.1:2379)"
        )
    return host, int(port)


def grpc_target(url: str, netloc: str) -> str:
    """gRPC target for the etcd members of ``netloc`` (``h:p,h:p``), names resolved now."""
    families: set[socket.AddressFamily] = set()
    addresses: list[str] = []
    for item in netloc.split(","):
        host, port = _hostport(item.strip(), url)
        try:
            info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise Unavailable(f"etcd endpoint {host!r} of {url} does not resolve ({e})") from e
        family, _, _, _, sockaddr = info[0]
        families.add(family)
        ip = str(sockaddr[0])
        addresses.append(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
    if len(families) > 1:
        raise ValueError("etcd endpoints mix IPv4 and IPv6 addresses; use one family")
    scheme = "ipv6" if socket.AF_INET6 in families else "ipv4"
    return f"{scheme}:{','.join(addresses)}"


def encode(record: StoredRecord) -> bytes:
    """The JSON envelope stored as an etcd value."""
    return json.dumps({
        "data": base64.b64encode(record.data).decode(),
        "expires_at": record.expires_at,
        "owner": record.owner,
    }, separators=(",", ":")).encode()


def decode(kind: str, name: str, value: bytes) -> StoredRecord | None:
    """A record from its envelope; None for a value this store did not write."""
    try:
        doc = json.loads(value)
        data = base64.b64decode(doc["data"], validate=True)
        expires = doc.get("expires_at")
        owner = doc.get("owner")
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    if expires is not None and not isinstance(expires, int | float):
        return None
    if owner is not None and not isinstance(owner, str):
        return None
    return StoredRecord(kind, name, data, None if expires is None else float(expires), owner)


def _alive(record: StoredRecord, now: float) -> bool:
    return record.expires_at is None or record.expires_at > now


TLS_FILES = ("ca.crt", "tls.crt", "tls.key")


def tls_credentials(directory: Path) -> grpc.ChannelCredentials:
    """Channel credentials from ``ca.crt``, ``tls.crt`` and ``tls.key`` in ``directory``."""
    contents = []
    for name in TLS_FILES:
        try:
            contents.append((directory / name).read_bytes())
        except OSError as e:
            raise FailedPrecondition(
                f"etcd_tls_dir: cannot read {directory / name} ({e.strerror}); the directory "
                f"needs {', '.join(TLS_FILES)} (etcd's CA, this registry's client certificate "
                "and key)"
            ) from e
    ca, cert, key = contents
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                        certificate_chain=cert)


class EtcdStore:
    """A :class:`~sdk.registry.store.SharedStore` on etcd; create it with :meth:`open`."""

    def __init__(
        self, url: str, target: str, prefix: str, retry_for: float = RETRY_FOR,
        tls: tuple[grpc.ChannelCredentials, str] | None = None,
    ) -> None:
        """``tls``: credentials and the host name etcd's certificate must carry."""
        self.url = url
        self.prefix = prefix.rstrip("/").encode() + b"/"
        self.retry_for = retry_for
        self.clock: Callable[[], float] = time.time
        if tls is None:
            self._channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        else:
            credentials, authority = tls
            self._channel = grpc.aio.secure_channel(
                target, credentials, options=(*_CHANNEL_OPTIONS,
                                              ("grpc.default_authority", authority)),
            )
        self._kv: Any = rpc.KVStub(self._channel)
        self._lease: Any = rpc.LeaseStub(self._channel)
        self._watch: Any = rpc.WatchStub(self._channel)
        self._leases: dict[int, asyncio.Future[int]] = {}  # expiry second -> its lease
        self._closed = False

    @classmethod
    def open(cls, url: str, parts: SplitResult, tls_dir: Path | None = None) -> EtcdStore:
        """Check the URL (ValueError naming the problem) and prepare the channel (TLS with the
        files in ``tls_dir``); nothing is dialled until the first call. A host name that does
        not resolve raises Unavailable."""
        if not parts.netloc:
            raise ValueError("etcd:// needs at least one host:port")
        prefix = parts.path.rstrip("/") or DEFAULT_PREFIX
        target = grpc_target(url, parts.netloc)
        tls = None
        if tls_dir is not None:
            first, _ = _hostport(parts.netloc.split(",")[0].strip(), url)
            tls = (tls_credentials(tls_dir), first)
        return cls(url, target, prefix, tls=tls)

    # -- keys ------------------------------------------------------------------------------

    def _key(self, kind: str, name: str) -> bytes:
        return self.prefix + kind.encode() + b"/" + name.encode()

    def _split(self, key: bytes) -> tuple[str, str] | None:
        kind, sep, name = key[len(self.prefix):].decode(errors="replace").partition("/")
        return (kind, name) if sep and kind and name else None

    def _record(self, kv: Any) -> StoredRecord | None:
        names = self._split(bytes(kv.key))
        return None if names is None else decode(*names, bytes(kv.value))

    # -- calls with retries ----------------------------------------------------------------

    async def _retry(self, what: str, call: Callable[[float], Awaitable[T]]) -> T:
        if self._closed:
            raise FailedPrecondition(f"registry store {self.url} is closed")
        deadline = time.monotonic() + self.retry_for
        for attempt in range(10_000):
            left = deadline - time.monotonic()
            try:
                return await call(max(min(left, ATTEMPT_TIMEOUT), 0.05))
            except grpc.aio.AioRpcError as e:
                if e.code() not in _TRANSIENT or left <= 0:
                    raise Unavailable(
                        f"registry store {self.url}: {what} failed ({e.code().name}: "
                        f"{e.details()}); check that the etcd cluster has a quorum of members up"
                    ) from e
                _log.debug("etcd call retried", what=what, error=e.details(), attempt=attempt)
            await asyncio.sleep(min(0.05 * 2 ** min(attempt, 4), 0.5))  # retry backoff
        raise Unavailable(f"registry store {self.url}: {what} failed")

    async def _lease_for(self, expires_at: float) -> int:
        """The lease of the expiry second ``ceil(expires_at) + LEASE_SLACK``, granted once and
        shared by every record expiring in that second (see the module docstring)."""
        until = math.ceil(expires_at) + LEASE_SLACK
        now = self.clock()
        for stale in [second for second in self._leases if second <= now]:
            del self._leases[stale]
        granted = self._leases.get(until)
        if granted is None:
            granted = self._leases[until] = asyncio.ensure_future(self._grant(until - now))
        try:
            return await asyncio.shield(granted)
        except BaseException:
            if self._leases.get(until) is granted and granted.done():
                del self._leases[until]  # a failed grant is not cached
            raise

    async def _grant(self, ttl: float) -> int:
        reply: Any = await self._retry("grant lease", lambda t: self._lease.LeaseGrant(
            rpc.LeaseGrantRequest(TTL=max(1, math.ceil(ttl))), timeout=t))
        return int(reply.ID)

    # -- Store -----------------------------------------------------------------------------

    async def put_at(self, record: StoredRecord, expected: int | None = None) -> int:
        """Put the record (on its expiry second's lease when it expires); return the write's
        revision. With ``expected``, only if the key was last written at that revision (0: it
        does not exist), else StaleWrite."""
        key = self._key(record.kind, record.name)
        for attempt in range(2):
            lease = 0 if record.expires_at is None else await self._lease_for(record.expires_at)
            request = rpc.PutRequest(key=key, value=encode(record), lease=lease)
            try:
                if expected is None:
                    return await self._put(request)
                return await self._if_unchanged(key, expected,
                                                rpc.RequestOp(request_put=request))
            except StaleWrite:
                raise
            except Unavailable as e:
                if attempt or "lease not found" not in str(e):
                    raise
                self._leases.clear()  # revoked or expired under us: grant afresh, once
        raise AssertionError("unreachable")

    async def _if_unchanged(self, key: bytes, expected: int, operation: Any) -> int:
        request = rpc.TxnRequest(
            compare=[rpc.Compare(key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL,
                                 mod_revision=expected)],
            success=[operation],
        )
        reply: Any = await self._retry("write", lambda t: self._kv.Txn(request, timeout=t))
        if not reply.succeeded:
            raise StaleWrite(
                f"registry store {self.url}: {key.decode(errors='replace')} changed since "
                f"revision {expected} (on another replica); nothing was written, try again"
            )
        return int(reply.header.revision)

    async def _put(self, request: Any) -> int:
        reply: Any = await self._retry("put", lambda t: self._kv.Put(request, timeout=t))
        return int(reply.header.revision)

    async def put(self, record: StoredRecord) -> None:
        """Insert or replace ``(record.kind, record.name)``; returns once etcd committed it."""
        await self.put_at(record)

    async def delete_at(self, kind: str, name: str, expected: int | None = None) -> int | None:
        """Delete ``(kind, name)``; the revision of the deletion, None when nothing was stored.
        With ``expected``, only if the key was last written at that revision, else StaleWrite."""
        request = rpc.DeleteRangeRequest(key=self._key(kind, name))
        if expected is not None:
            return await self._if_unchanged(request.key, expected,
                                            rpc.RequestOp(request_delete_range=request))
        reply: Any = await self._retry("delete", lambda t: self._kv.DeleteRange(request, timeout=t))
        if int(reply.deleted) < 1:
            return None
        return int(reply.header.revision)

    async def delete(self, kind: str, name: str) -> bool:
        """Remove ``(kind, name)``; return whether it was stored (expired or not)."""
        return await self.delete_at(kind, name) is not None

    async def _range(self, prefix: bytes) -> tuple[int, list[Any]]:
        request = rpc.RangeRequest(key=prefix, range_end=_range_end(prefix))
        reply: Any = await self._retry("range", lambda t: self._kv.Range(request, timeout=t))
        return int(reply.header.revision), list(reply.kvs)

    async def load(self, kind: str, now: float) -> list[StoredRecord]:
        """Every record of ``kind`` not expired at ``now``, ordered by name."""
        _, kvs = await self._range(self.prefix + kind.encode() + b"/")
        records = [r for kv in kvs if (r := self._record(kv)) is not None and _alive(r, now)]
        return sorted(records, key=lambda r: r.name)

    async def snapshot(self, now: float) -> tuple[int, list[Change]]:
        """Records of every kind not expired at ``now`` (each as a change at the revision it was
        last written), and the revision they are all current at."""
        revision, kvs = await self._range(self.prefix)
        changes = [Change(int(kv.mod_revision), r.kind, r.name, r) for kv in kvs
                   if (r := self._record(kv)) is not None and _alive(r, now)]
        return revision, changes

    async def purge_expired(self, now: float) -> int:
        """Delete every record expired at ``now`` that nobody refreshed meanwhile."""
        _, kvs = await self._range(self.prefix)
        purged = 0
        for kv in kvs:
            record = self._record(kv)
            if record is None or _alive(record, now):
                continue
            request = rpc.TxnRequest(
                compare=[rpc.Compare(
                    key=bytes(kv.key), target=rpc.Compare.MOD, result=rpc.Compare.EQUAL,
                    mod_revision=int(kv.mod_revision),
                )],
                success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                    key=bytes(kv.key)))],
            )
            purged += await self._delete_if_unchanged(request)
        return purged

    async def _delete_if_unchanged(self, request: Any) -> int:
        reply: Any = await self._retry("purge", lambda t: self._kv.Txn(request, timeout=t))
        return int(bool(reply.succeeded))

    # -- changes ---------------------------------------------------------------------------

    async def changes(self, after: int) -> AsyncIterator[Change]:
        """Every change above revision ``after``, in order, reopening the watch when it breaks."""
        attempt = 0
        while not self._closed:
            call = self._watch.Watch(wait_for_ready=True)
            try:
                await call.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                    key=self.prefix, range_end=_range_end(self.prefix), start_revision=after + 1,
                )))
                async for response in call:
                    self._check(response, after)
                    attempt = 0
                    for event in response.events:
                        change = self._change(event)
                        after = int(event.kv.mod_revision)
                        if change is not None:
                            yield change
            except grpc.aio.AioRpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    raise Unavailable(f"registry store {self.url}: watch failed ({e})") from e
                _log.info("etcd watch reopened", after=after, error=e.details())
            finally:
                call.cancel()
            attempt += 1
            await asyncio.sleep(min(0.05 * 2 ** min(attempt, 4), 0.5))  # reconnect backoff

    def _check(self, response: Any, after: int) -> None:
        if int(response.compact_revision):
            raise HistoryLost(
                f"etcd compacted its history to revision {response.compact_revision}, past "
                f"revision {after + 1} this watch needed"
            )
        if response.canceled:
            raise Unavailable(
                f"registry store {self.url}: etcd cancelled the watch ({response.cancel_reason})"
            )

    def _change(self, event: Any) -> Change | None:
        kv = event.kv
        names = self._split(bytes(kv.key))
        if names is None:
            return None
        revision = int(kv.mod_revision)
        if event.type == rpc.Event.DELETE:
            return Change(revision, *names, None)
        record = decode(*names, bytes(kv.value))
        return None if record is None else Change(revision, *names, record)

    async def close(self) -> None:
        """Close the channel (open watches end). Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._channel.close()
