"""One settings object per binary, read from environment variables with one prefix.

A binary declares a frozen dataclass whose fields carry a ``help`` text in their metadata;
:func:`load` fills it from ``<PREFIX><FIELD>`` environment variables (upper-case), then from
explicit overrides (command-line flags), converting to the field's type. :func:`describe` lists
the variables with their defaults and help for the README and ``--help``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, TypeVar, get_type_hints

from sdk.errors import InvalidArgument

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def setting(default: Any, help: str) -> Any:
    """Declare a settings field with its default and documentation."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _convert(name: str, kind: Any, raw: str) -> Any:
    if kind is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise InvalidArgument(name, f"{raw!r} is not a boolean: use true or false")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise InvalidArgument(name, f"{raw!r} is not a number") from None
    if kind == list[str]:
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def load(cls: type[T], prefix: str, overrides: Mapping[str, Any] | None = None) -> T:
    """Build ``cls`` from the environment and ``overrides`` (None values are ignored)."""
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        env = prefix + field.name.upper()
        if env in os.environ:
            values[field.name] = _convert(env, hints[field.name], os.environ[env])
    for key, value in (overrides or {}).items():
        if value is not None and value != []:
            values[key] = value
    return cls(**values)


def describe(cls: type[Any], prefix: str) -> list[tuple[str, str, str]]:
    """(variable, default, help) for every field, for documentation."""
    rows = []
    for field in dataclasses.fields(cls):
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = ""
        shown = ",".join(default) if isinstance(default, list) else str(default)
        rows.append((prefix + field.name.upper(), shown, field.metadata.get("help", "")))
    return rows
