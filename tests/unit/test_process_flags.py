"""Every setting of every process is a flag, documented once in ``--help`` (it once printed
"(default: ...) (default: )" for each, and several settings had no flag at all)."""

from __future__ import annotations

import re
from typing import Any

import pytest

import external.__main__ as external_main
import forwarder.__main__ as forwarder_main
import gateway.__main__ as gateway_main
import nse.__main__ as nse_main
import nsmgr.__main__ as nsmgr_main
import registry.__main__ as registry_main
from external.settings import ExternalSettings
from forwarder.settings import ForwarderSettings
from gateway.settings import GatewaySettings
from nse.settings import NseSettings
from nsmgr.settings import NsmgrSettings
from registry.settings import RegistrySettings
from sdk import settings

BINARIES = [
    (registry_main, RegistrySettings), (nsmgr_main, NsmgrSettings),
    (forwarder_main, ForwarderSettings), (nse_main, NseSettings),
    (gateway_main, GatewaySettings), (external_main, ExternalSettings),
]


@pytest.mark.parametrize(("module", "cls"), BINARIES, ids=["registry", "nsmgr", "forwarder",
                                                            "nse", "gateway", "external"])
def test_every_setting_has_one_documented_flag(module: Any, cls: type[Any]) -> None:
    text = module._parser().format_help()
    flat = re.sub(r"\s+", " ", text)
    assert "insecure" not in flat or "no mTLS yet" not in flat
    for option in settings.options(cls, module.PREFIX):
        assert f"{option.flag} " in flat, f"{option.flag} missing from --help"
        assert flat.count(f"[{option.env}]") == 1, f"{option.env} shown {flat.count(option.env)}x"
    assert "(default: )" not in flat
    for entry in re.split(r" (?=--[a-z])", flat):
        assert entry.count("(default:") <= 1, entry


def test_flags_fill_the_settings_they_name() -> None:
    args = nse_main._parser().parse_args([
        "--service", "a", "--service", "b", "--label", "x=1", "--register-interval", "2.5",
        "--policy", "/etc/p.yaml",
    ])
    config = settings.load(NseSettings, nse_main.PREFIX, vars(args))
    assert config.services == ["a", "b"] and config.labels == ["x=1"]
    assert config.register_interval == 2.5 and config.policy == "/etc/p.yaml"
    flags = nsmgr_main._parser().parse_args(["--insecure", "--select-policy", "weighted"])
    loaded = settings.load(NsmgrSettings, nsmgr_main.PREFIX, vars(flags))
    assert loaded.insecure is True and loaded.select_policy == "weighted"
    with pytest.raises(SystemExit):
        nsmgr_main._parser().parse_args(["--select-policy", "fastest"])
