"""``nsmctl policy check``: explain what an authorization policy decides, without a fabric.

``policy check --policy FILE --client ID --service NAME [--label k=v]...`` prints the decision, the
deciding rule and the reason; exit code 0 when allowed, 1 when denied (2 for a usage error or a
malformed policy file is reported as ``error: ...`` with exit 1 by the root command).
``--register`` checks a registration instead (``--client`` is then the endpoint's identity).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nsmctl.context import CliError
from sdk.errors import InvalidArgument
from sdk.security.policy import PolicyFile

policy_app = typer.Typer(help="Authorization policies: check decisions.", no_args_is_help=True)


def parse_labels(pairs: list[str]) -> dict[str, str]:
    """``k=v`` strings → a map (a bad pair is a usage error)."""
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: use --label key=value")
        labels[key] = value
    return labels


@policy_app.command("check")
def check(
    policy: Annotated[Path, typer.Option("--policy", metavar="FILE", help="the policy YAML file")],
    client: Annotated[str, typer.Option("--client", metavar="SPIFFE-ID",
                                              help="SPIFFE ID of the caller ('' = none)")],
    service: Annotated[str, typer.Option("--service", metavar="NAME",
                                                help="network service name")],
    label: Annotated[list[str] | None, typer.Option(
        "--label", metavar="KEY=VALUE", help="a request label; repeatable")] = None,
    registration: Annotated[bool, typer.Option(
        "--register", help="check a registration by endpoint --client instead of a request")
    ] = False,
) -> None:
    """Explain whether CLIENT may request (or register) SERVICE; exit 0 allowed, 1 denied."""
    labels = parse_labels(label or [])
    try:
        loaded = PolicyFile(policy).policy()
    except InvalidArgument as exc:
        raise CliError(f"--policy {exc}") from None
    who = client or None
    decision = (
        loaded.explain_registration(who, service) if registration
        else loaded.explain(who, service, labels)
    )
    typer.echo(f"{'allowed' if decision.allowed else 'denied'}: {decision.reason}")
    if decision.rule is not None:
        typer.echo(f"rule: {decision.rule}")
    raise typer.Exit(0 if decision.allowed else 1)


def register(app: typer.Typer) -> None:
    """Add the ``policy`` command group to the root command."""
    app.add_typer(policy_app, name="policy")
