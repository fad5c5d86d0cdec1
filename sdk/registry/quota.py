"""Registry element ``Quota``: how many records, and how many bytes of them, one identity may hold.

Without a bound one registrant could fill the registry's memory and store (a thousand 1 MB
records took it from 150 MB to over 1.3 GB). Contract, on register by an outside caller (its
owner in ``ctx.values[OWNER]``, set by ``Ownership``): the owner's current records of this kind
(:meth:`sdk.registry.persist.Persist.usage`), plus the registrations of it still in flight,
plus this one (a refresh of a record it already owns counts only the change in size), must stay
within ``max_records`` records and ``max_bytes`` bytes; otherwise the call raises
:class:`sdk.errors.ResourceExhausted` naming the quota, the usage and the setting that raises it,
and nothing is stored or announced. In-flight registrations are reserved before the call goes on
and released however it ends, so concurrent calls cannot overshoot together. In-process calls
(no owner) and unregisters pass; what an unregister or expiry removes is no longer counted.
Place it after ``Ownership`` and before ``Expire``/``Watch``/``Persist``.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from sdk.errors import InvalidArgument, ResourceExhausted
from sdk.registry.core import RegistryCursor, RegistryElement
from sdk.registry.kinds import RecordKind
from sdk.registry.ownership import OWNER
from sdk.registry.persist import Persist

M = TypeVar("M", NetworkService, NetworkServiceEndpoint)

DEFAULT_MAX_RECORDS = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class Quota(RegistryElement[M], Generic[M]):
    """See the module docstring."""

    def __init__(
        self,
        kind: RecordKind[M],
        records: Persist[M],
        max_records: int = DEFAULT_MAX_RECORDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        setting: str = "VWIRE_REGISTRY_MAX_RECORDS_PER_IDENTITY / _MAX_BYTES_PER_IDENTITY",
    ) -> None:
        if max_records < 1 or max_bytes < 1:
            raise InvalidArgument(
                "max_records_per_identity", "quotas must be at least 1 record and 1 byte"
            )
        self.kind: RecordKind[M] = kind
        self.records: Persist[M] = records
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.setting = setting
        self._pending: dict[str, tuple[int, int]] = {}

    def _reserve(self, owner: str, records: int, size: int) -> None:
        held, held_bytes = self._pending.get(owner, (0, 0))
        held, held_bytes = held + records, held_bytes + size
        if held <= 0 and held_bytes <= 0:
            self._pending.pop(owner, None)
        else:
            self._pending[owner] = (held, held_bytes)

    async def register(self, record: M, next: RegistryCursor[M]) -> M:
        owner = next.ctx.values.get(OWNER)
        if owner is None:
            return await next.register(record)
        current = self.records.get(record.name)
        refresh = current is not None and self.records.owner(record.name) == owner
        new_records = 0 if refresh else 1
        new_bytes = record.ByteSize() - (current.ByteSize() if refresh and current else 0)
        count, size = self.records.usage(owner)
        pending_count, pending_bytes = self._pending.get(owner, (0, 0))
        if count + pending_count + new_records > self.max_records:
            raise ResourceExhausted(
                f"{owner} holds {count + pending_count} {self.kind.title}s: the per-identity "
                f"quota is {self.max_records} records; unregister some, or raise {self.setting}"
            )
        if new_bytes > 0 and size + pending_bytes + new_bytes > self.max_bytes:
            raise ResourceExhausted(
                f"{owner} holds {size + pending_bytes} bytes of {self.kind.title}s and this "
                f"record adds {new_bytes}: the per-identity quota is {self.max_bytes} bytes; "
                f"register smaller records, unregister some, or raise {self.setting}"
            )
        self._reserve(owner, new_records, max(new_bytes, 0))
        try:
            return await next.register(record)
        finally:
            self._reserve(owner, -new_records, -max(new_bytes, 0))
