"""The registry process: assembles the registry chains and serves them over gRPC.

Chains (one per record kind), in order:
``ToGateway → Validate → [RecordPathIds] → AuthorizeRegistration → [Publish] → Ownership → Quota
→ [Expire] → Watch → Persist`` —
names of another domain (``nse@cloud-b``) are asked of this domain's gateway and names of this
domain lose their suffix (:mod:`sdk.registry.togateway`); a registration of ``name@F``
(publishing in floating domain F) is validated and authorized as ``name`` and then sent to the
gateway by ``Publish``, never stored here; validation rejects bad input before
anything is stored; an endpoint's ``path_ids`` must end with
the identity of the registrar that calls over mTLS (:mod:`sdk.registry.pathids`); the policy
says which endpoint identities may register which
services, and only a record's owner may change or remove it (owners are stored with the records,
so this holds across restarts); ``Quota`` bounds the records and bytes one identity holds;
``Expire`` (endpoints only) sets
expiration times and, as a background task, unregisters expired endpoints through the same chain so
watchers see them deleted; ``Watch`` fans changes out (cutting watchers that fall too many
events or bytes behind); ``Persist`` keeps the records (cached in
memory, written through to the store). On a shared store (``etcd://``) the process is one of
several replicas: a :class:`~sdk.registry.follow.Follower` feeds the caches and the watchers from
the store's change stream, so every replica serves the same records and announces every change
(each with its store revision, from which a client's watch may resume on another replica).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from api.proto import registry_pb2
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.domains import DEFAULT_DOMAIN
from sdk.grpcutil import ListenAddress, serve, stop
from sdk.limits import new_server
from sdk.registry.client import RemoteRegistry
from sdk.registry.core import RegistryChain
from sdk.registry.expire import Expire
from sdk.registry.follow import Follower
from sdk.registry.kinds import ENDPOINT, SERVICE
from sdk.registry.ownership import Ownership
from sdk.registry.pathids import RecordPathIds
from sdk.registry.persist import Persist
from sdk.registry.publish import Publish
from sdk.registry.quota import DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, Quota
from sdk.registry.server import add_registry
from sdk.registry.store import SharedStore, Store
from sdk.registry.togateway import ToGateway
from sdk.registry.validate import Validate
from sdk.registry.watch import DEFAULT_BACKLOG_BYTES, Watch
from sdk.security.policy import ALLOW_ALL, PolicySource, StaticPolicy
from sdk.security.registry_authorize import AuthorizeRegistration

_log = structlog.get_logger("registry")
M = TypeVar("M", NetworkService, NetworkServiceEndpoint)

SERVICE_NAMES = tuple(
    registry_pb2.DESCRIPTOR.services_by_name[name].full_name
    for name in ("NetworkServiceRegistry", "NetworkServiceEndpointRegistry")
)


class Registry:
    """A registry over one store: its two chains, and the server once started."""

    def __init__(
        self,
        store: Store,
        default_ttl: float = 60.0,
        max_ttl: float = 3600.0,
        trace: bool = False,
        policy: PolicySource | None = None,
        max_records_per_identity: int = DEFAULT_MAX_RECORDS,
        max_bytes_per_identity: int = DEFAULT_MAX_BYTES,
        watch_backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
        domain: str = DEFAULT_DOMAIN,
        gateway: grpc.aio.Channel | None = None,
    ) -> None:
        self.store = store
        allowed = policy or StaticPolicy(ALLOW_ALL)
        self.service_records = Persist(SERVICE, store)
        self.endpoint_records = Persist(ENDPOINT, store)
        self.service_watch = Watch(SERVICE, max_backlog_bytes=watch_backlog_bytes)
        self.endpoint_watch = Watch(ENDPOINT, max_backlog_bytes=watch_backlog_bytes)
        quota = (max_records_per_identity, max_bytes_per_identity)
        self.expire: Expire[NetworkServiceEndpoint] = Expire(default_ttl, max_ttl)
        self.services: RegistryChain[NetworkService] = RegistryChain(
            [
                ToGateway(domain, RemoteRegistry(SERVICE, gateway) if gateway else None,
                          defer=True),
                Validate(SERVICE),
                AuthorizeRegistration(allowed),
                *([Publish(RemoteRegistry(SERVICE, gateway))] if gateway else []),
                Ownership(SERVICE, self._stored_owner(self.service_records)),
                Quota(SERVICE, self.service_records, *quota),
                self.service_watch,
                self.service_records,
            ],
            trace,
        )
        self.endpoints: RegistryChain[NetworkServiceEndpoint] = RegistryChain(
            [
                ToGateway(domain, RemoteRegistry(ENDPOINT, gateway) if gateway else None,
                          defer=True),
                Validate(ENDPOINT),
                RecordPathIds(),
                AuthorizeRegistration(allowed),
                *([Publish(RemoteRegistry(ENDPOINT, gateway))] if gateway else []),
                Ownership(ENDPOINT, self._stored_owner(self.endpoint_records)),
                Quota(ENDPOINT, self.endpoint_records, *quota),
                self.expire,
                self.endpoint_watch,
                self.endpoint_records,
            ],
            trace,
        )
        # On a shared store (etcd) this process is one replica: the store's changes feed the
        # caches and the watchers (sdk.registry.follow).
        self.follower = Follower(store, [
            (self.service_records, self.service_watch),
            (self.endpoint_records, self.endpoint_watch),
        ]) if isinstance(store, SharedStore) else None
        self.addresses: list[ListenAddress] = []
        self._server: grpc.aio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._following: asyncio.Task[None] | None = None

    @staticmethod
    def _stored_owner(records: Persist[M]) -> Callable[[str], Awaitable[str | None]]:
        async def recall(name: str) -> str | None:
            return records.owner(name)
        return recall

    async def start(
        self,
        addresses: list[ListenAddress],
        insecure_tcp: bool = False,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        """Load stored records, start expiry, serve on ``addresses`` with health and reflection."""
        if self.follower is not None:
            await self.follower.load()
            self._following = asyncio.create_task(self.follower.run(), name="registry-follow")
        else:
            await self.service_records.load()
            await self.endpoint_records.load()
        loaded = len(self.service_records), len(self.endpoint_records)
        self._sweeper = asyncio.create_task(
            self.expire.sweep(self.endpoint_records, self.endpoints), name="registry-expiry"
        )
        server = new_server()
        add_registry(server, self.services, self.endpoints)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        try:
            self.addresses = await serve(server, addresses, insecure_tcp, credentials)
        except BaseException:
            await self._stop_sweeper()
            raise
        self._server = server
        _log.info(
            "registry serving",
            listen=[a.url if a.scheme == "unix" else f"tcp://{a.target}" for a in self.addresses],
            services=loaded[0],
            endpoints=loaded[1],
        )

    async def _stop_sweeper(self) -> None:
        for task in (self._sweeper, self._following):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._sweeper = self._following = None

    async def stop(self, grace: float = 2.0) -> None:
        """End watch streams, stop serving, remove socket files, close the store. Idempotent."""
        self.service_watch.end_all()
        self.endpoint_watch.end_all()
        await self._stop_sweeper()
        if self._server is not None:
            await stop(self._server, self.addresses, grace)
            self._server = None
        await self.store.close()
        _log.info("registry stopped")
