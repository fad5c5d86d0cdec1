"""The two record kinds of NSM's registry and what differs between them.

A :class:`RecordKind` tells generic registry elements how to name, copy, serialise and match one
kind of record, so every element is written once for both NetworkService and
NetworkServiceEndpoint. Matching follows NSM's template semantics: an empty field in the query
template matches anything; a set field must match (names and URL exactly, service names as a
subset, labels as a subset per service, a NetworkService's payload exactly).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message

from api.proto.registry_pb2 import (
    NetworkService,
    NetworkServiceEndpoint,
    NetworkServiceEndpointQuery,
    NetworkServiceEndpointResponse,
    NetworkServiceQuery,
    NetworkServiceResponse,
)
from sdk.registry.core import Event, Query

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class RecordKind(Generic[M]):
    """How registry elements treat one kind of record."""

    key: str                      # storage key: "ns" or "nse"
    title: str                    # for messages: "network service" / "network service endpoint"
    message: type[M]
    matches: Callable[[M, M], bool]
    expires: bool                 # whether records of this kind carry an expiration time
    field: str                    # the record's field name in NSM's query and response messages
    query_message: type[Message]
    response_message: type[Message]

    def name_of(self, record: M) -> str:
        return str(getattr(record, "name"))  # noqa: B009 - both kinds have .name

    def copy(self, record: M) -> M:
        clone = self.message()
        clone.CopyFrom(record)
        return clone

    def to_query(self, message: Message) -> Query[M]:
        """NSM's query message → :class:`Query` (with vwire's ``resume_revision``)."""
        return Query(
            getattr(message, self.field), bool(getattr(message, "watch")),  # noqa: B009
            int(getattr(message, "resume_revision")),  # noqa: B009
        )

    def from_query(self, query: Query[M]) -> Message:
        """:class:`Query` → NSM's query message."""
        return self.query_message(
            **{self.field: query.template, "watch": query.watch, "resume_revision": query.resume}
        )

    def to_event(self, message: Message) -> Event[M]:
        """NSM's response message → :class:`Event` (with vwire's ``revision``)."""
        return Event(
            getattr(message, self.field), bool(getattr(message, "deleted")),  # noqa: B009
            int(getattr(message, "revision")),  # noqa: B009
        )

    def from_event(self, event: Event[M]) -> Message:
        """:class:`Event` → NSM's response message."""
        return self.response_message(
            **{self.field: event.record, "deleted": event.deleted, "revision": event.revision}
        )

    def parse(self, data: bytes) -> M:
        record = self.message()
        record.ParseFromString(data)
        return record


def _labels_contain(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())


def match_service(template: NetworkService, record: NetworkService) -> bool:
    """NSM template match for NetworkService records."""
    return (
        (not template.name or template.name == record.name)
        and (not template.payload or template.payload == record.payload)
    )


def match_endpoint(template: NetworkServiceEndpoint, record: NetworkServiceEndpoint) -> bool:
    """NSM template match for NetworkServiceEndpoint records."""
    if template.name and template.name != record.name:
        return False
    if template.url and template.url != record.url:
        return False
    if not set(template.network_service_names) <= set(record.network_service_names):
        return False
    for service, wanted in template.network_service_labels.items():
        have = record.network_service_labels.get(service)
        if have is None or not _labels_contain(have.labels, wanted.labels):
            return False
    return True


SERVICE = RecordKind(
    key="ns",
    title="network service",
    message=NetworkService,
    matches=match_service,
    expires=False,
    field="network_service",
    query_message=NetworkServiceQuery,
    response_message=NetworkServiceResponse,
)
ENDPOINT = RecordKind(
    key="nse",
    title="network service endpoint",
    message=NetworkServiceEndpoint,
    matches=match_endpoint,
    expires=True,
    field="network_service_endpoint",
    query_message=NetworkServiceEndpointQuery,
    response_message=NetworkServiceEndpointResponse,
)
