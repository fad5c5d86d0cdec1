"""Registry records and queries across domains: which domain a query names, and records renamed
for another domain.

A query names a domain through its template: the record name (``nse@cloud-b``; ``@cloud-b``
alone means every record of that domain) and, for endpoints, the network service names and the
keys of ``network_service_labels`` (``db@cloud-b``). A record handed to another domain carries
every one of these names with ``@<its domain>``, so the receiver asks for it again by the same
names (:func:`qualify`); a query arriving in its domain loses the suffix (:func:`unqualify`).
No element here: helpers for the registry's interdomain elements.
"""

from __future__ import annotations

from typing import TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.domains import join, split
from sdk.errors import InvalidArgument

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)


def _names(template: NetworkService | NetworkServiceEndpoint) -> list[str]:
    names = [template.name] if template.name else []
    if isinstance(template, NetworkServiceEndpoint):
        names += [*template.network_service_names, *template.network_service_labels]
    return names


def query_domain(template: NetworkService | NetworkServiceEndpoint) -> str | None:
    """The one domain the names of ``template`` carry (None: none carries one).

    Raises InvalidArgument when they name two domains: one query asks one domain."""
    domains = {domain for _, domain in map(split, _names(template)) if domain is not None}
    if len(domains) > 1:
        raise InvalidArgument(
            "query", f"names several domains ({', '.join(sorted(domains))}): ask one at a time"
        )
    if any(not domain for domain in domains):
        raise InvalidArgument("query", "has a name ending in '@' with no domain after it")
    return domains.pop() if domains else None


def unqualify(template: M, domain: str) -> M:
    """A copy of ``template`` with ``@domain`` removed from its names (``@domain`` alone → any)."""
    clone = type(template)()
    clone.CopyFrom(template)
    clone.name = _strip(template.name, domain)
    if isinstance(template, NetworkServiceEndpoint):
        assert isinstance(clone, NetworkServiceEndpoint)
        del clone.network_service_names[:]
        clone.network_service_names.extend(
            _strip(name, domain) for name in template.network_service_names
        )
        clone.network_service_labels.clear()
        for service, labels in template.network_service_labels.items():
            clone.network_service_labels[_strip(service, domain)].CopyFrom(labels)
    return clone


def qualify(record: M, domain: str) -> M:
    """A copy of ``record`` whose names all carry ``@domain``."""
    clone = type(record)()
    clone.CopyFrom(record)
    clone.name = join(record.name, domain)
    if isinstance(record, NetworkServiceEndpoint):
        assert isinstance(clone, NetworkServiceEndpoint)
        del clone.network_service_names[:]
        clone.network_service_names.extend(join(n, domain) for n in record.network_service_names)
        clone.network_service_labels.clear()
        for service, labels in record.network_service_labels.items():
            clone.network_service_labels[join(service, domain)].CopyFrom(labels)
    return clone


def _strip(name: str, domain: str) -> str:
    base, found = split(name)
    return base if found == domain else name
