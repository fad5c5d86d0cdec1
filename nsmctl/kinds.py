"""The record kinds as the operator names them: resource names, aliases, manifest kinds.

Each :class:`CliKind` wraps the SDK's :class:`sdk.registry.kinds.RecordKind`, so commands are
written once for both NetworkService and NetworkServiceEndpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, get_args

import typer

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.registry.kinds import ENDPOINT, SERVICE, RecordKind

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)


@dataclass(frozen=True)
class CliKind(Generic[M]):
    """One record kind on the command line."""

    record: RecordKind[M]
    resource: str                 # "networkservice": output prefix, as in "networkservice/db"
    manifest: str                 # "NetworkService": the ``kind:`` of a YAML document
    aliases: tuple[str, ...]      # words accepted as the KIND argument

    @property
    def title(self) -> str:
        """Human name for messages, e.g. "network service"."""
        return self.record.title

    def ref(self, name: str) -> str:
        """``resource/name``, as printed by apply and delete."""
        return f"{self.resource}/{name}"

    def template(self, name: str = "") -> M:
        """A query template (or unregister request) selecting ``name``, or everything."""
        return self.record.message(name=name)


NS: CliKind[NetworkService] = CliKind(
    SERVICE, "networkservice", "NetworkService", ("ns", "networkservice", "networkservices")
)
NSE: CliKind[NetworkServiceEndpoint] = CliKind(
    ENDPOINT,
    "networkserviceendpoint",
    "NetworkServiceEndpoint",
    ("nse", "nses", "networkserviceendpoint", "networkserviceendpoints"),
)
KINDS: tuple[CliKind[Any], ...] = (NS, NSE)

#: The KIND argument's accepted words (a Literal, so help and completion list them).
KindWord = Literal[
    "ns", "networkservice", "networkservices",
    "nse", "nses", "networkserviceendpoint", "networkserviceendpoints",
]
assert set(get_args(KindWord)) == {alias for kind in KINDS for alias in kind.aliases}


def parse_kind(word: str) -> CliKind[Any]:
    """The kind named by a KIND argument; a usage error lists the accepted words."""
    for kind in KINDS:
        if word.lower() in kind.aliases:
            return kind
    accepted = ", ".join(alias for kind in KINDS for alias in kind.aliases)
    raise typer.BadParameter(f"unknown kind {word!r}: use one of {accepted}")


def by_manifest(name: object) -> CliKind[Any] | None:
    """The kind whose manifest ``kind:`` is ``name``, or None."""
    return next((kind for kind in KINDS if kind.manifest == name), None)
