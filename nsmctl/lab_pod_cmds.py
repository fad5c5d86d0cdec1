"""``nsmctl lab pod apply|delete|list``: one Kubernetes pod in the lab (see :mod:`lab.pods`).

``apply`` plays API server (the manifest goes through the real admission webhook as an
AdmissionReview, the patch is applied and the result validated) and kubelet (the mutated pod runs
on a lab node: its own network namespace, init containers to completion, then sidecars and app
containers); ``delete`` stops it as a kubelet does. :func:`status_lines` is what ``nsmctl lab
status`` shows of them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lab import pods
from lab.topology import DEFAULT
from nsmctl.context import console, emit
from nsmctl.render import Output, dump
from sdk.errors import InvalidArgument

pod_app = typer.Typer(help="Kubernetes pods in the lab: admitted by the real webhook, run on a "
                      "lab node.", no_args_is_help=True)


@pod_app.command()
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", metavar="FILE",
                                       help="the Pod manifest (YAML); - for stdin")],
    node: Annotated[int, typer.Option("--node", min=1, max=16, metavar="N",
                                      help="the lab node to run it on")] = 1,
) -> None:
    """Admit a pod through the webhook and run it on a lab node (waits for its init
    containers)."""
    try:
        text = typer.get_text_stream("stdin").read() if str(file) == "-" else file.read_text()
    except OSError as exc:
        raise InvalidArgument("--file", f"cannot read {file}: {exc.strerror}") from None
    record = pods.apply(text, node, DEFAULT, lambda m: emit(f"==> {m}"))
    emit(f"pod/{record['name']} created")


@pod_app.command()
def delete(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the pod's name")],
    grace: Annotated[float | None, typer.Option(
        "--grace-period", metavar="SECONDS",
        help="seconds between SIGTERM and SIGKILL (default: the pod's "
        "terminationGracePeriodSeconds)")] = None,
) -> None:
    """Stop a pod as a kubelet does (SIGTERM, grace period) and remove all of it."""
    pods.delete(name, DEFAULT, grace)
    emit(f"pod/{name} deleted")


@pod_app.command("list")
def list_(output: Annotated[Output, typer.Option("-o", "--output")] = Output.table) -> None:
    """The lab's pods and the state of their containers."""
    found = pods.pods(DEFAULT)
    if output is not Output.table:
        emit(dump(found, output).rstrip("\n"))
        return
    out = console()
    for line in status_lines() or ["no pods: nsmctl lab pod apply -f pod.yaml"]:
        out.print(line)


def status_lines() -> list[str]:
    """One line per lab pod, for ``nsmctl lab status`` (empty without pods)."""
    return pods.status_lines(DEFAULT)


def register(lab_app: typer.Typer) -> None:
    """Add ``pod`` to the ``lab`` command group."""
    lab_app.add_typer(pod_app, name="pod")
