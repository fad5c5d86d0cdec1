"""One settings object per binary, read from environment variables with one prefix.

A binary declares a frozen dataclass whose fields carry a ``help`` text in their metadata (and,
optionally, the command-line flag's name and its choices); :func:`load` fills it from
``<PREFIX><FIELD>`` environment variables (upper-case), then from explicit overrides (command-line
flags), converting to the field's type. :func:`describe` lists the variables with their defaults
and help for the README; :func:`options` tells a command-line parser the flag of every field.
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


def setting(
    default: Any, help: str, *, flag: str = "", choices: tuple[str, ...] = ()
) -> Any:
    """Declare a settings field with its default and documentation; ``flag`` names its
    command-line flag when it is not the field's name (e.g. ``service`` for ``services``, a
    list given one item per flag), ``choices`` lists the values it accepts."""
    metadata = {"help": help, "flag": flag, "choices": choices}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Option:
    """A settings field as a command-line flag."""

    dest: str  #: the field's name
    flag: str  #: ``--name-of-flag``
    env: str  #: the environment variable
    kind: Any  #: the field's type
    default: str  #: the default as shown ('' when there is none to show)
    help: str
    choices: tuple[str, ...]


def options(cls: type[Any], prefix: str) -> list[Option]:
    """The command-line flag of every field of ``cls``."""
    hints = get_type_hints(cls)
    found = []
    for field, (env, default, text) in zip(
        dataclasses.fields(cls), describe(cls, prefix), strict=True
    ):
        flag = field.metadata.get("flag") or field.name.replace("_", "-")
        found.append(Option(field.name, f"--{flag}", env, hints[field.name], default, text,
                            tuple(field.metadata.get("choices", ()))))
    return found


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
