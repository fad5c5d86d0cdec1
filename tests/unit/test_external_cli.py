"""nsmctl external add: options that cannot make a valid request are usage errors (exit 2)
naming the option, refused before the registry is asked (none runs at this address)."""

from __future__ import annotations

import base64

import pytest

from tests.cli import nsmctl

KEY = base64.b64encode(bytes(32)).decode()
NOWHERE = "unix:///nonexistent/registry.sock"


@pytest.mark.parametrize(("args", "named"), [
    (["--service", "db", "--serve", "web", "--public-key", KEY], "--service"),
    ([], "--service"),
    (["--serve", "web", "--public-key", KEY], "--address"),
    (["--serve", "web", "--address", "10.0.0.0/24", "--public-key", KEY], "--address"),
    (["--service", "db", "--address", "10.0.0.1", "--public-key", KEY], "--address"),
    (["--service", "db"], "--public-key"),
    (["--service", "db", "--public-key", KEY, "--generate-key"], "--public-key"),
    (["--service", "Not_A_Service", "--public-key", KEY], "--service"),
])
def test_bad_options_are_usage_errors(args: list[str], named: str) -> None:
    done = nsmctl("--registry", NOWHERE, "external", "add", "h1", *args)
    assert done.code == 2, done.err
    assert named in done.err and "cannot reach" not in done.err


def test_a_good_request_goes_to_the_registry() -> None:
    done = nsmctl("--registry", NOWHERE, "--timeout", "0.5", "external", "add", "h1",
                  "--serve", "web", "--address", "192.168.1.5", "--public-key", KEY)
    assert done.code == 1 and "cannot reach the registry" in done.err
