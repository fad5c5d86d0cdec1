"""``nsmctl ca`` as a user types it (issue 19): durations are checked like every other option
(exit 2, the option named), and ``ca agent --once`` always says what it did — also that nothing
was due, and until when — on stdout, with no log line mixed in."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from nsmctl.app import main

TD = "example.org"


def nsmctl(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VWIRE_CA_DIR", str(tmp_path / "ca"))
    code, _, err = nsmctl("ca", "init", "--trust-domain", TD)
    assert code == 0, err
    return tmp_path


@pytest.mark.parametrize(("args", "option", "says"), [
    (("issue", "--spiffe-id", f"spiffe://{TD}/nsc/w", "--out", "OUT", "--ttl", "99999d"),
     "--ttl", "out of range"),
    (("issue", "--spiffe-id", f"spiffe://{TD}/nsc/w", "--out", "OUT", "--ttl", "90"),
     "--ttl", "is not a duration"),
    (("agent", "--svids", "OUT", "--interval", "0s"), "--interval", "out of range"),
    (("agent", "--svids", "OUT", "--ttl", "1 hour"), "--ttl", "is not a duration"),
    (("rotate-root", "--root-ttl", "99999d"), "--root-ttl", "out of range"),
])
def test_bad_durations_are_usage_errors(
    ca: Path, args: tuple[str, ...], option: str, says: str,
) -> None:
    code, out, err = nsmctl("ca", *(str(ca / "svids") if a == "OUT" else a for a in args))
    assert code == 2, err
    assert err.startswith(f"error: Invalid value for '{option}'"), err
    assert says in err and out == ""
    assert not (ca / "svids").exists()


def test_agent_once_says_when_nothing_is_due(ca: Path) -> None:
    svids = ca / "svids"
    code, _, err = nsmctl("ca", "issue", "--spiffe-id", f"spiffe://{TD}/nsc/w",
                          "--out", str(svids / "w"), "--ttl", "2h")
    assert code == 0, err
    code, out, err = nsmctl("ca", "agent", "--svids", str(svids), "--once")
    assert code == 0, err
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith("nothing due: every SVID is valid past 20"), out
    assert "the next renewal is due at" in lines[0] and f"1 SVID under {svids}" in lines[0]


def test_agent_once_on_an_empty_tree(ca: Path) -> None:
    (ca / "empty").mkdir()
    code, out, _ = nsmctl("ca", "agent", "--svids", str(ca / "empty"), "--once")
    assert code == 0
    assert out == f"nothing due: no SVID under {ca / 'empty'}\n"


def test_agent_once_prints_what_it_renewed_and_no_log_lines(ca: Path) -> None:
    svids = ca / "svids"
    nsmctl("ca", "issue", "--spiffe-id", f"spiffe://{TD}/nsc/w", "--out", str(svids / "w"))
    nsmctl("ca", "rotate-root")
    code, out, err = nsmctl("ca", "agent", "--svids", str(svids), "--once")
    assert code == 0, err
    assert out == f"updated the trust bundle of spiffe://{TD}/nsc/w in {svids / 'w'}\n"
    assert err == ""  # the renewal's info log lines: only with --debug, and on stderr
    code, out, err = nsmctl("--debug", "ca", "agent", "--svids", str(svids), "--once")
    assert code == 0, err
    assert out.startswith(f"renewed spiffe://{TD}/nsc/w in {svids / 'w'} until ")
    assert len(out.splitlines()) == 1 and "svid renewed" in err


def test_an_svid_lifetime_beyond_the_cas_limit_is_a_usage_error(tmp_path: Path) -> None:
    """The CA issues SVIDs for at most 365 days; a longer --ttl is refused as a bad option
    value (exit 2, option named) before the CA is even read, not with exit 1 from the CA."""
    code, _, err = nsmctl("ca", "issue", "--dir", str(tmp_path / "ca"), "--spiffe-id",
                          "spiffe://t.org/nse/db", "--out", str(tmp_path / "svid"), "--ttl", "400d")
    assert code == 2, err
    assert "--ttl" in err and "out of range" in err and "365d" in err
