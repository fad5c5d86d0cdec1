"""An undo log: rollback of a failed programming and ``close`` are the same operation.

Each step that changes the kernel pushes the action that reverts it. :meth:`UndoLog.unwind`
runs them newest first. It is idempotent: actions that ran are dropped, ``NotFound`` counts as
success (already gone), and actions that failed otherwise stay in the log so a later call retries
them; after trying all, the first such failure is raised as ``DataplaneError``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sdk.errors import DataplaneError, NotFound

UndoAction = Callable[[], Awaitable[object]]


class UndoLog:
    """LIFO list of (description, action) pairs; see module docstring."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, UndoAction]] = []

    def push(self, description: str, action: UndoAction) -> None:
        """Remember how to revert a step that just succeeded."""
        self._actions.append((description, action))

    def __len__(self) -> int:
        return len(self._actions)

    async def unwind(self) -> None:
        """Run every pending action, newest first (see module docstring)."""
        failed: list[tuple[str, UndoAction]] = []
        errors: list[str] = []
        while self._actions:
            description, action = self._actions.pop()
            try:
                await action()
            except NotFound:
                continue
            except Exception as err:  # keep going: undo as much as possible
                failed.append((description, action))
                errors.append(f"{description}: {err}")
        self._actions = list(reversed(failed))
        if errors:
            raise DataplaneError("cleanup incomplete, will retry on close: " + "; ".join(errors))
