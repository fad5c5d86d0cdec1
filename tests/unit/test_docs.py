"""The README documents every setting and keeps the two-command quick start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.settings import PREFIX as AGENT
from agent.settings import AgentSettings
from external.settings import PREFIX as EXTERNAL
from external.settings import ExternalSettings
from forwarder.settings import PREFIX as FORWARDER
from forwarder.settings import ForwarderSettings
from gateway.settings import PREFIX as GATEWAY
from gateway.settings import GatewaySettings
from nse.settings import PREFIX as NSE
from nse.settings import NseSettings
from nsmgr.settings import PREFIX as NSMGR
from nsmgr.settings import NsmgrSettings
from registry.settings import PREFIX as REGISTRY
from registry.settings import RegistrySettings
from sdk import settings
from webhook.settings import PREFIX as WEBHOOK
from webhook.settings import WebhookSettings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize(
    ("cls", "prefix"),
    [(RegistrySettings, REGISTRY), (NsmgrSettings, NSMGR), (ForwarderSettings, FORWARDER),
     (NseSettings, NSE), (WebhookSettings, WEBHOOK), (AgentSettings, AGENT),
     (GatewaySettings, GATEWAY), (ExternalSettings, EXTERNAL)],
)
def test_every_setting_is_in_the_readme(cls: type, prefix: str) -> None:
    for variable, _, _ in settings.describe(cls, prefix):
        assert f"`{variable}`" in README, f"{variable} is missing from README.md"


def test_quick_start_is_two_commands_that_exist_and_ci_calls_the_test_command() -> None:
    block = README.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert len(commands) == 2
    for command in commands:
        script = re.fullmatch(r"bash (\S+)", command)
        assert script and (ROOT / script.group(1)).is_file(), command
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
