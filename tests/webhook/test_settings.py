"""The webhook's settings: one flag per setting in ``--help`` (the project's settings pattern),
environment variables with the ``VWIRE_WEBHOOK_`` prefix, and what shapes the injection."""

from __future__ import annotations

import re

import pytest

import webhook.__main__ as webhook_main
from sdk import settings
from webhook.inject import InjectConfig
from webhook.settings import PREFIX, WebhookSettings


def test_every_setting_has_one_documented_flag() -> None:
    flat = re.sub(r"\s+", " ", webhook_main._parser().format_help())
    for option in settings.options(WebhookSettings, PREFIX):
        assert f"{option.flag} " in flat and flat.count(f"[{option.env}]") == 1, option.flag
    assert "(default: )" not in flat


def test_environment_and_flags_fill_the_injection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VWIRE_WEBHOOK_IMAGE", "registry.example/vwire:1.2")
    monkeypatch.setenv("VWIRE_WEBHOOK_RUN_AS_USER", "1000")
    args = webhook_main._parser().parse_args(["--sidecar", "container", "--socket-volume", "csi"])
    config = InjectConfig.of(settings.load(WebhookSettings, PREFIX, vars(args)))
    assert config == InjectConfig(image="registry.example/vwire:1.2", run_as_user=1000,
                                  sidecar="container", socket_volume="csi")
    with pytest.raises(SystemExit):
        webhook_main._parser().parse_args(["--sidecar", "sometimes"])


def test_reviews_are_counted_by_result() -> None:
    """Every answer the webhook gives is counted (patched, allowed, denied, error)."""
    from prometheus_client import REGISTRY

    from webhook.inject import InjectConfig
    from webhook.review import review

    def count(result: str) -> float:
        return REGISTRY.get_sample_value("vwire_webhook_reviews_total", {"result": result}) or 0

    before = count("denied")
    answer = review({"apiVersion": "nonsense"}, InjectConfig.of(
        settings.load(WebhookSettings, PREFIX, {})), lambda namespace: None)  # type: ignore[arg-type, return-value]
    assert answer["response"]["allowed"] is False
    assert count("denied") == before + 1
