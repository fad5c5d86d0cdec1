"""One style of help for every command, applied to the whole command tree at start.

Typer prints each parameter's Python type (``<str>``, ``<list[str]>``, ``<int range>``,
``<path>``) and writes required arguments as ``{url}``; docstrings hold reStructuredText
(````nsmctl connect````). :func:`tidy` makes every placeholder one UPPER-CASE word (the
parameter's ``metavar`` where a command gives one, else its name: ``URL``, ``ID``, ``N``),
writes choices once as ``a|b|c``, puts optional arguments in ``[...]`` and required ones bare,
and turns RST literals into plain quotes (``'nsmctl connect'``). Commands should still give a
``metavar`` that says what the value is (``ADDR``, ``FILE``, ``SPIFFE-ID``).
"""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperArgument, TyperOption

_RST_LITERAL = re.compile(r"``([^`]+)``")
_RST_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def plain(text: str | None) -> str | None:
    """Help text without reStructuredText markup."""
    if text is None:
        return None
    return _RST_LITERAL.sub(r"'\1'", _RST_ROLE.sub(r"\1", text))


def _choices(param: Any) -> str | None:
    described = getattr(param, "type_descriptor", None)
    if described is None or not described.is_choice:
        return None
    return "|".join(str(getattr(c, "value", c)) for c in described.choices or ())


class _Argument(TyperArgument):
    def _usage_display_name(self) -> str:
        name = self.metavar or (self.name or "").upper()
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    def _rich_display_name(self) -> str:
        return self.metavar or (self.name or "").upper()

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        name = _choices(self) or (self.name or "").upper().replace("_", "-")
        return name + ("..." if self.nargs != 1 else "")


def _tidy_param(param: Any) -> None:
    if isinstance(param, TyperArgument):
        param.__class__ = _Argument
    elif isinstance(param, TyperOption):
        param.__class__ = _Option
    if getattr(param, "help", None):
        param.help = plain(param.help)


def tidy(command: Any) -> Any:
    """Apply the style to ``command`` (a click command built by typer) and every command under
    it; returns ``command``."""
    command.help = plain(command.help)
    command.short_help = plain(command.short_help)
    for param in command.params:
        _tidy_param(param)
    for sub in getattr(command, "commands", {}).values():
        tidy(sub)
    return command
