"""The gateway refuses bad settings with the field and the fix, before it serves anything."""

from __future__ import annotations

import pytest

from gateway.__main__ import main
from gateway.app import Gateway
from gateway.settings import GatewaySettings
from sdk.errors import InvalidArgument


@pytest.mark.parametrize(("settings", "field", "fix"), [
    ({"domain": "Cloud_B"}, "domain", "lower-case letters"),
    ({"listen": ["http://x:1"]}, "listen", "unix:///path or tcp://host:port"),
    ({"listen": []}, "listen", "give tcp://host:port"),
    ({"advertise": "tcp://nohost"}, "advertise", "tcp://host:port"),
    ({"domains_file": "/nonexistent/domains.yaml"}, "domains_file", "cannot be read"),
    ({"max_in_flight_per_peer": 0}, "max_in_flight_per_peer", "at least 1"),
])
def test_bad_settings_name_the_field(settings: dict[str, object], field: str, fix: str) -> None:
    with pytest.raises(InvalidArgument, match=fix) as caught:
        Gateway(GatewaySettings(**settings))  # type: ignore[arg-type]
    assert str(caught.value).startswith(field)


def test_the_command_line_says_it_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--domain", "Cloud_B"]) == 2
    assert capsys.readouterr().err.startswith("gateway: domain: 'Cloud_B' is not a valid name")
