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

from nsmctl import ca_cmds, lab_cmds, node_cmds, policy_cmds, registry_cmds
from nsmctl.context import DEFAULT_REGISTRY, DEFAULT_TIMEOUT, CliError, Options
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
    help="Operate the connectivity fabric: registry records, connections, labs.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _check_registry(value: str) -> str:
    try:
        parse_address(value, "--registry")
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
                     help="registry address: unix:///path.sock or tcp://host:port"),
    ] = DEFAULT_REGISTRY,
    timeout: Annotated[
        float,
        typer.Option("--timeout", metavar="SECONDS", callback=_check_timeout,
                     help="deadline of each request (watches have none)"),
    ] = DEFAULT_TIMEOUT,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks of errors")] = False,
) -> None:
    """Operate the connectivity fabric: registry records, connections, labs."""
    ctx.obj = Options(registry=registry, timeout=timeout, debug=debug)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


registry_cmds.register(app)
lab_cmds.register(app)
node_cmds.register(app)
ca_cmds.register(app)
policy_cmds.register(app)


def main(argv: Sequence[str] | None = None) -> int:
    """Run nsmctl with ``argv`` (default: the process arguments); returns the exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(
            args=list(sys.argv[1:] if argv is None else argv),
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
