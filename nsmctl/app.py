"""The root ``nsmctl`` command: global options, command groups, and how failures are reported.

A failure is one line on stderr, ``error: ...``, and a non-zero exit: 2 for a usage error (bad
option, unknown KIND), 1 for everything else (the registry refused, a name is missing, a
manifest is wrong, the registry cannot be reached). ``--debug`` adds the traceback.

To add a command group, write a module with ``register(app: typer.Typer)`` and call it below.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from nsmctl import (
    ca_cmds,
    dashboard,
    external_cmds,
    graph_cmds,
    join_cmds,
    lab_cmds,
    node_cmds,
    policy_cmds,
    registry_cmds,
)
from nsmctl.context import (
    DEFAULT_REGISTRY,
    DEFAULT_TIMEOUT,
    CliError,
    Options,
    logs_on_stderr,
)
from nsmctl.helpstyle import tidy
from sdk.errors import FabricError, InvalidArgument
from sdk.grpcutil import parse_address


def _message(exc: BaseException) -> str:
    notes = "; ".join(getattr(exc, "__notes__", ()))
    return f"{exc} ({notes})" if notes else str(exc)


class _Root(TyperGroup):
    """Turns exceptions from commands into one ``error:`` line (plus a traceback with --debug)."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort):
            raise
        except (CliError, FabricError) as exc:
            self._report(ctx, exc, _message(exc))
        except Exception as exc:
            self._report(ctx, exc, f"unexpected {type(exc).__name__}: {_message(exc)} "
                                   "(a bug in nsmctl: run with --debug and report it)")
        raise typer.Exit(1)

    @staticmethod
    def _report(ctx: typer.Context, exc: Exception, message: str) -> None:
        opts = ctx.find_object(Options)
        if opts is not None and opts.debug:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"error: {message}", file=sys.stderr)


app = typer.Typer(
    cls=_Root,
    name="nsmctl",
    help="Operate the connectivity fabric: registry records, connections, labs.\n\n"
         "The options below, and --nsmgr and -o/--output, may be given before or after the "
         "command.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _check_registry(value: str) -> str:
    try:
        for address in value.split(","):  # several: the registry's replicas
            parse_address(address.strip(), "--registry")
    except InvalidArgument as exc:
        raise typer.BadParameter(exc.problem) from None
    return value


def _check_timeout(value: float) -> float:
    if not value > 0:
        raise typer.BadParameter(f"must be more than 0 seconds (got {value:g})")
    return value


@app.callback()
def root(
    ctx: typer.Context,
    registry: Annotated[
        str,
        typer.Option("--registry", envvar="NSMCTL_REGISTRY", metavar="ADDR",
                     callback=_check_registry,
                     help="registry address: unix:///path.sock or tcp://host:port; several "
                          "replicas' addresses comma-separated"),
    ] = DEFAULT_REGISTRY,
    timeout: Annotated[
        float,
        typer.Option("--timeout", metavar="SECONDS", callback=_check_timeout,
                     show_default=False,
                     help=f"deadline of each request (default {DEFAULT_TIMEOUT:g}; watches "
                          "have none)"),
    ] = DEFAULT_TIMEOUT,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks of errors")] = False,
) -> None:
    """Operate the connectivity fabric: registry records, connections, labs.

    The options here, and --nsmgr and -o/--output, may be given before or after the command.
    """
    ctx.obj = Options(registry=registry, timeout=timeout, debug=debug)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


registry_cmds.register(app)
lab_cmds.register(app)
node_cmds.register(app)
ca_cmds.register(app)
policy_cmds.register(app)
graph_cmds.register(app)
dashboard.register(app)
external_cmds.register(app)
join_cmds.register(app)


#: Options of the root command, accepted anywhere on the line (moved before the command).
ROOT_OPTIONS = {"--registry": True, "--timeout": True, "--debug": False}  # name: takes a value
#: Options of many commands, accepted before the command too (moved after it).
COMMAND_OPTIONS = {"--nsmgr": True, "--output": True, "-o": True}


def _option(token: str, known: dict[str, bool]) -> tuple[bool, bool]:
    """Whether ``token`` is one of ``known`` and whether its value is the next token."""
    name, eq, _ = token.partition("=")
    if name in known:
        return True, known[name] and not eq
    if token.startswith("-o") and not token.startswith("--") and "-o" in known:
        return True, token == "-o"  # -ojson
    return False, False


def global_options_anywhere(argv: Sequence[str]) -> list[str]:
    """``argv`` with the root options (--registry, --timeout, --debug) moved in front of the
    command wherever they were given, and the shared command options (--nsmgr, -o/--output)
    given before the command moved after it; everything after ``--`` stays as it is."""
    front: list[str] = []
    middle: list[str] = []
    back: list[str] = []
    rest: list[str] = []
    args = list(argv)
    i, seen_command = 0, False
    while i < len(args):
        token = args[i]
        if token == "--":
            rest = args[i:]
            break
        is_root, root_value = _option(token, ROOT_OPTIONS)
        is_cmd, cmd_value = _option(token, COMMAND_OPTIONS)
        take = 2 if (root_value or cmd_value) and i + 1 < len(args) else 1
        if is_root:
            front += args[i:i + take]
        elif is_cmd and not seen_command:
            back += args[i:i + take]
        else:
            seen_command = seen_command or not token.startswith("-")
            middle.append(token)
            take = 1
        i += take
    return front + middle + back + rest


def main(argv: Sequence[str] | None = None) -> int:
    """Run nsmctl with ``argv`` (default: the process arguments); returns the exit code."""
    command = tidy(typer.main.get_command(app))
    args = global_options_anywhere(sys.argv[1:] if argv is None else argv)
    with logs_on_stderr("--debug" in args[:args.index("--") if "--" in args else None]):
        return _run(command, args)


def _run(command: Any, args: list[str]) -> int:
    try:
        result = command.main(
            args=args,
            prog_name="nsmctl",
            standalone_mode=False,
        )
    except typer.TyperException as exc:  # usage errors (exit code 2) and click's own failures
        usage = getattr(exc, "ctx", None)
        hint = f" (see '{usage.command_path} --help')" if usage is not None else ""
        print(f"error: {exc.format_message()}{hint}", file=sys.stderr)
        return int(exc.exit_code)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    return int(result) if isinstance(result, int) else 0
