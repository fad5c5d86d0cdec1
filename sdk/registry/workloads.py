"""The registry chain a node manager serves to the workloads of its node.

Local endpoints and forwarders register through their nsmgr's unix socket; the domain registry
then sees only the nsmgr's identity, so everything that depends on *which workload* registers is
enforced here, keyed by the registrant's proven identity. :func:`workload_chain` assembles, per
record kind:

``LocalCallersOnly → VerifyRegistrant → Validate → RecordPathIds(first hop) → *reserved →
Ownership → *kept → AuthorizeRegistration → *local → upstream``

* ``LocalCallersOnly``: other nodes (TCP) are refused, they use the domain registry directly;
* ``VerifyRegistrant``: a register/unregister must prove its registrant (a registration token
  signed with its SVID, or mTLS);
* ``RecordPathIds(first_hop=True)``: ``path_ids`` may name only the registrant (and then this
  nsmgr, which it appends);
* ``reserved``: e.g. ``ReservedService("forwarder", "forwarder")``: only forwarder identities
  register forwarders;
* ``Ownership``: a name belongs to the identity that registered it first; after an nsmgr restart
  the owner is recalled from the ``path_ids`` the domain registry keeps for this nsmgr
  (:func:`upstream_registrant`);
* ``kept``: elements that keep records on the node and end the call (``LocalForwarders``), so
  they skip the policy below (forwarders are governed by their identity kind);
* ``AuthorizeRegistration``: the ``registrations`` rules of the nsmgr's policy, for the
  registrant (a policy without such rules leaves registrations to the domain registry);
* ``local``: elements that remember local records (``LocalEndpoints``), so only what passed every
  check is remembered; then ``upstream`` (the domain registry client).

A refused call stops before anything is remembered or forwarded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.registry.core import Query, RegistryChain, RegistryElement
from sdk.registry.kinds import RecordKind
from sdk.registry.localonly import LocalCallersOnly
from sdk.registry.ownership import Ownership
from sdk.registry.pathids import RecordPathIds, last_id, registrant_id
from sdk.registry.registrant import VerifyRegistrant
from sdk.registry.validate import Validate
from sdk.security.policy import PolicySource
from sdk.security.registry_authorize import AuthorizeRegistration
from sdk.security.source import SvidSource

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)


def upstream_registrant(
    kind: RecordKind[M], upstream: RegistryChain[M], source: SvidSource | None
) -> Callable[[str], Awaitable[str | None]]:
    """A recall function for :class:`Ownership`: who registered ``name`` through this nsmgr,
    read from the record the domain registry stores (its ``path_ids`` end with this nsmgr's ID
    and, before it, the registrant's); None when the record is not there or not ours."""

    async def recall(name: str) -> str | None:
        if source is None:
            return None
        own = str(source.current().spiffe_id)
        template = kind.message(name=name)
        async for event in upstream.find(Query(template)):
            record = event.record
            if record.name == name and last_id(record) == own:
                return registrant_id(record) or None
        return None

    return recall


def workload_chain(
    kind: RecordKind[M],
    upstream_element: RegistryElement[M],
    upstream: RegistryChain[M],
    source: SvidSource | None,
    policy: PolicySource,
    *,
    reserved: Sequence[RegistryElement[M]] = (),
    kept: Sequence[RegistryElement[M]] = (),
    local: Sequence[RegistryElement[M]] = (),
    registry: str = "the domain registry",
    trace: bool = False,
) -> RegistryChain[M]:
    """See the module docstring."""
    elements: list[RegistryElement[M]] = [
        LocalCallersOnly(kind, registry),
        VerifyRegistrant(kind, source),
        Validate(kind),
        RecordPathIds(source, first_hop=True),
    ]
    elements.extend(reserved)
    elements.append(Ownership(kind, upstream_registrant(kind, upstream, source)))
    elements.extend(kept)
    elements.append(AuthorizeRegistration(policy, only_with_rules=True))
    elements.extend(local)
    elements.append(upstream_element)
    return RegistryChain(elements, trace)
