"""``python -m nsc --help`` documents its environment variables like the other processes
(issue 19): every ``VWIRE_NSC_*`` the README lists, next to its flag, and each default once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nsc.__main__ import _parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _help() -> str:
    return " ".join(_parser().format_help().split())


def test_help_lists_every_variable_the_readme_documents() -> None:
    documented = set(re.findall(r"VWIRE_NSC_[A-Z_]+", README.read_text()))
    assert documented >= {"VWIRE_NSC_NSMGR", "VWIRE_NSC_SVID_DIR", "VWIRE_NSC_NSMGR_ID"}
    shown = _help()
    assert {name for name in documented if f"[{name}]" not in shown} == set()


def test_each_default_is_shown_once() -> None:
    shown = _parser().format_help()
    options = re.split(r"\n  (?=-)", shown)
    assert [o for o in options if o.count("(default:") > 1] == []
    assert "(default: unix:///var/run/vwire/nsmgr.sock)" in _help()
    assert "(default: )" not in shown and "60.0" not in shown


def test_the_environment_sets_the_flags_and_a_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VWIRE_NSC_NSMGR", "tcp://node:5001")
    monkeypatch.setenv("VWIRE_NSC_NSMGR_ID", "spiffe://lab.vwire/nsmgr/n1")
    args = _parser().parse_args(["kernel://s/nsm0"])
    assert (args.nsmgr, args.nsmgr_id, args.svid_dir) == (
        "tcp://node:5001", "spiffe://lab.vwire/nsmgr/n1", "")
    assert _parser().parse_args(["u", "--nsmgr", "unix:///x.sock"]).nsmgr == "unix:///x.sock"
