"""The all-or-none and try-every loops behind :meth:`KernelPort.add_all` and
:meth:`KernelPort.delete_all`, shared by the real and the fake kernel port.

Contract:

- :func:`add_in_order` awaits ``add(entry)`` for each entry in order; when one raises, it awaits
  ``delete(entry)`` for each entry added so far, newest first (a failing removal is passed over:
  the first failure is what the caller learns), and re-raises.
- :func:`delete_every` awaits ``delete(entry)`` for every entry; ``NotFound`` (already gone) is
  skipped; the first other failure is raised once every entry was tried.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence

from sdk.errors import FabricError, NotFound

from .port import Entry

Change = Callable[[Entry], Awaitable[None]]


async def add_in_order(entries: Sequence[Entry], add: Change, delete: Change) -> None:
    """See the module docstring."""
    added: list[Entry] = []
    try:
        for entry in entries:
            await add(entry)
            added.append(entry)
    except BaseException:
        for entry in reversed(added):
            with contextlib.suppress(FabricError):
                await delete(entry)
        raise


async def delete_every(entries: Sequence[Entry], delete: Change) -> None:
    """See the module docstring."""
    first: FabricError | None = None
    for entry in entries:
        try:
            await delete(entry)
        except NotFound:
            continue
        except FabricError as err:
            first = first or err
    if first is not None:
        raise first
