"""nsmctl's command line as a user types it: global options anywhere, usage errors that name
the option and exit 2, help in one style. Runs :func:`nsmctl.app.main` in-process; nothing
answers at the addresses used, which is what some tests check."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from nsmctl import params
from nsmctl.app import app, global_options_anywhere
from tests.cli import nsmctl

POLICY = Path(__file__).resolve().parents[2] / "docs" / "examples" / "policy.yaml"
NOWHERE = "unix:///tmp/nsmctl-test-nothing-here.sock"




@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NSMCTL_REGISTRY", "NSMCTL_NSMGR"):
        monkeypatch.delenv(name, raising=False)


# -- global options anywhere ----------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "expected"), [
    (["get", "ns", "--registry", "X"], ["--registry", "X", "get", "ns"]),
    (["get", "ns", "--registry=X", "--debug"], ["--registry=X", "--debug", "get", "ns"]),
    (["--nsmgr", "A", "-o", "json", "status"], ["status", "--nsmgr", "A", "-o", "json"]),
    (["-ojson", "lab", "status"], ["lab", "status", "-ojson"]),
    (["--timeout", "3", "connect", "U", "--netns", "n"],
     ["--timeout", "3", "connect", "U", "--netns", "n"]),
    (["status", "-o", "yaml", "--", "--registry"], ["status", "-o", "yaml", "--", "--registry"]),
])
def test_global_options_are_moved_where_they_belong(argv: list[str], expected: list[str]) -> None:
    assert global_options_anywhere(argv) == expected


def test_registry_after_the_command() -> None:
    result = nsmctl("get", "ns", "--registry", NOWHERE, "--timeout", "0.5")
    assert result.code == 1
    assert result.err == (f"error: cannot reach the registry at {NOWHERE}: is it running? "
                          "(set --registry or NSMCTL_REGISTRY)\n")


def test_nsmgr_and_output_before_the_command() -> None:
    result = nsmctl("--nsmgr", NOWHERE, "-o", "json", "--timeout", "0.5", "status")
    assert result.code == 1
    assert result.err == (f"error: cannot reach nsmgr at {NOWHERE}: is it running? "
                          "(set --nsmgr or NSMCTL_NSMGR)\n")


# -- usage errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "option", "says"), [
    (("status", "--nsmgr", "ftp://node:1"), "--nsmgr", "unknown scheme 'ftp'"),
    (("--nsmgr", "http://x", "check"), "--nsmgr", "unknown scheme 'http'"),
    (("get", "ns", "--registry", "ftp://x"), "--registry", "unknown scheme 'ftp'"),
    (("status", "--timeout", "0"), "--timeout", "must be more than 0 seconds"),
])
def test_usage_errors_name_the_option_and_exit_2(
    args: tuple[str, ...], option: str, says: str
) -> None:
    result = nsmctl(*args)
    assert result.code == 2, result.err
    assert result.err.startswith(f"error: Invalid value for '{option}'")
    assert says in result.err


@pytest.mark.parametrize(("check", "value", "says"), [
    (params.spiffe_id, "nsmgr-1", "must start with 'spiffe://'"),
    (params.duration, "99999d", "out of range"),
    (params.duration, "0s", "out of range"),
    (params.duration, "1 hour", "is not a duration"),
    (params.address, "node:5000", "unknown scheme"),
])
def test_shared_option_checks(check: Any, value: str, says: str) -> None:
    with pytest.raises(typer.BadParameter, match=re.escape(says)):
        check(value)
    assert params.seconds("90m") == 5400 and params.duration("7d") == "7d"


# -- help -----------------------------------------------------------------------------------------


def _paths() -> Iterator[list[str]]:
    def walk(command: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


#: What help must not show: RST literals and roles, typer's type placeholders (<str>,
#: <list[str]>, <int range>, <path>), required arguments in braces, Python values.
LEAKS = re.compile(r"`|<(?:str|int|float|path|list\[[a-z]+\]|[a-z]+ range)>|\{[a-z_]+\}|"
                   r"\bFalse\b|\bTrue\b|default: \d+\.0\b")


def test_help_has_one_style_of_placeholders_and_no_markup() -> None:
    leaks = []
    for path in _paths():
        shown = nsmctl(*path, "--help")
        assert shown.code == 0, (path, shown.err)
        leaks += [f"{' '.join(path) or 'nsmctl'}: {line.strip()}"
                  for line in shown.out.splitlines() if LEAKS.search(line)]
    assert leaks == []


def test_help_names_values_in_upper_case() -> None:
    connect = nsmctl("connect", "--help").out
    assert "Usage: nsmctl connect [OPTIONS] URL" in connect
    assert "--netns NS " in connect and "--nsmgr-id SPIFFE-ID" in connect
    assert "-o, --output table|json|yaml" in connect
    assert "Close a connection made with 'nsmctl connect'" in nsmctl("--help").out
    root = " ".join(nsmctl("--help").out.split())
    assert "--debug" in root and "may be given before or after the command" in root


# -- machine output -------------------------------------------------------------------------------


def test_policy_check_prints_only_its_answer() -> None:
    """The policy file's 'policy loaded' log line goes to stderr (and only with --debug), never
    into the command's output."""
    args = ("policy", "check", "--policy", str(POLICY),
            "--client", "spiffe://example.org/nsc/web", "--service", "secure-db")
    result = nsmctl(*args)
    assert result.code == 1
    assert result.out.startswith("denied: no rule allows spiffe://example.org/nsc/web")
    assert "policy loaded" not in result.out + result.err
    debug = nsmctl("--debug", *args)
    assert "policy loaded" in debug.err and "policy loaded" not in debug.out
