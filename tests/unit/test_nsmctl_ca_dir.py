"""``nsmctl ca`` commands share one CA directory: ``--dir``, else ``$VWIRE_CA_DIR``, else
/var/lib/vwire/ca, so ``ca issue`` and ``ca agent`` work as docs/nsmctl.md shows them, without
``--dir`` (issue 19, item 6: they failed with "root.key is missing")."""

from __future__ import annotations

from pathlib import Path

import pytest

from nsmctl.app import main


def test_issue_and_agent_use_the_ca_of_vwire_ca_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    ca = tmp_path / "ca"
    assert main(["ca", "init", "--trust-domain", "example.org", "--dir", str(ca)]) == 0
    monkeypatch.setenv("VWIRE_CA_DIR", str(ca))
    svids = tmp_path / "svids"
    assert main(["ca", "issue", "--spiffe-id", "spiffe://example.org/nsc/web-1",
                 "--out", str(svids / "web-1")]) == 0, capsys.readouterr().err
    assert (svids / "web-1" / "svid.crt").is_file()
    assert main(["ca", "agent", "--svids", str(svids), "--once"]) == 0, capsys.readouterr().err
    assert "root.key is missing" not in capsys.readouterr().err


def test_init_without_dir_creates_the_ca_in_vwire_ca_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VWIRE_CA_DIR", str(tmp_path / "ca"))
    assert main(["ca", "init", "--trust-domain", "example.org"]) == 0, capsys.readouterr().err
    assert (tmp_path / "ca" / "root.key").is_file()
    assert main(["ca", "issue", "--spiffe-id", "spiffe://example.org/nsc/web-1",
                 "--out", str(tmp_path / "web-1")]) == 0, capsys.readouterr().err


def test_the_help_names_the_default_and_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    main(["ca", "issue", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "/var/lib/vwire/ca" in shown and "VWIRE_CA_DIR" in shown
