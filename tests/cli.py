"""Running ``nsmctl`` in-process in tests: its exit code and what it printed."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

from nsmctl.app import main


@dataclass
class Result:
    """What one nsmctl run gave: exit code, stdout, stderr."""

    code: int
    out: str
    err: str


def nsmctl(*args: str) -> Result:
    """Run ``nsmctl ARGS`` in this process, capturing its output."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return Result(code, out.getvalue(), err.getvalue())
