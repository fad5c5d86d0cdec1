"""Finding and choosing the endpoint for a request, from the domain registry.

:class:`EndpointChooser` asks the registry for the network service (its ``matches``) and the
endpoints that provide it, narrows them with the service's matches and the client's labels
(:mod:`sdk.select.match`), and picks one with the configured policy, which leaves out endpoints
the circuit breaker has ejected and those the caller excludes. Errors: ``NotFound`` naming the
service when nothing provides it, or saying that every candidate is ejected or excluded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.errors import InvalidArgument, NotFound
from sdk.registry.core import Query, RegistryChain
from sdk.select.breaker import CircuitBreaker
from sdk.select.match import candidates
from sdk.select.policy import LeastConnections, Policy, RoundRobin, Weighted

POLICIES = ("round-robin", "least-connections", "weighted")


def make_policy(name: str, load: Callable[[str], int], breaker: CircuitBreaker) -> Policy:
    """The selection policy called ``name`` (see POLICIES), skipping ejected endpoints."""
    if name == "round-robin":
        return RoundRobin(breaker=breaker)
    if name == "least-connections":
        return LeastConnections(load, breaker=breaker)
    if name == "weighted":
        return Weighted(breaker=breaker)
    raise InvalidArgument(
        "select_policy", f"{name!r} is unknown: use one of {', '.join(POLICIES)}"
    )


class EndpointChooser:
    """See the module docstring."""

    def __init__(
        self,
        services: RegistryChain[NetworkService],
        endpoints: RegistryChain[NetworkServiceEndpoint],
        policy: Policy,
        breaker: CircuitBreaker,
    ) -> None:
        self.services = services
        self.endpoints = endpoints
        self.policy = policy
        self.breaker = breaker

    async def _service(self, name: str) -> NetworkService:
        async for event in self.services.find(Query(NetworkService(name=name))):
            return event.record
        return NetworkService(name=name)  # unregistered service: no matches, any endpoint

    async def _providers(self, name: str) -> list[NetworkServiceEndpoint]:
        query = Query(NetworkServiceEndpoint(network_service_names=[name]))
        return [event.record async for event in self.endpoints.find(query)]

    async def choose(
        self, service_name: str, labels: Mapping[str, str], exclude: set[str]
    ) -> NetworkServiceEndpoint:
        """Pick an endpoint for ``service_name`` (see the module docstring)."""
        providers = await self._providers(service_name)
        if not providers:
            raise NotFound(
                f"network service {service_name!r} not found: no endpoint provides it"
            )
        service = await self._service(service_name)
        found = candidates(service, providers, labels)
        if not found:
            raise NotFound(
                f"network service {service_name!r}: no endpoint matches the client's labels "
                f"{dict(labels)}"
            )
        return self.policy.pick(service_name, found, exclude)
