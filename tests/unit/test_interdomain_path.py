"""Paths across domains as operators see them (``nsmctl status``): gateways mark their segments
with their domain (``MarkDomain``), and the path shows where each domain's hops start."""

from __future__ import annotations

from typing import Any

import pytest

from nsmctl.connections import hops, summary
from nsmctl.context import CliError
from nsmctl.registry_cmds import in_domain


def segment(name: str, domain: str = "", **metrics: str) -> dict[str, Any]:
    marks = {"domain": domain} if domain else {}
    return {"name": name, "metrics": {**marks, **metrics}}


def test_a_path_across_domains_names_each_domain_where_it_starts() -> None:
    conn = {"path": {"path_segments": [
        segment("web"), segment("nsmgr-n1"), segment("forwarder-n1", wireguard_rx_bytes="10"),
        segment("nsmgr-n1"), segment("gateway-a", "a"), segment("gateway-b", "b"),
        segment("nsmgr-n2"), segment("nse-b"),
    ]}}
    assert hops(conn) == ("[a] web → nsmgr-n1 → forwarder-n1 → nsmgr-n1 → gateway-a → "
                          "[b] gateway-b → nsmgr-n2 → nse-b")
    assert summary(conn)["via"] == "wireguard"


def test_a_path_within_one_domain_is_unchanged_and_the_mark_is_no_counter() -> None:
    conn = {"path": {"path_segments": [segment("web"), segment("nsmgr-n1"), segment("nse")]}}
    assert hops(conn) == "web → nsmgr-n1 → nse"
    marked = {"path": {"path_segments": [segment("web"), segment("gateway-a", "a")]}}
    assert summary(marked)["via"] == "-"  # a domain mark is no data-plane counter


def test_nsmctl_domain_option_names_records_of_that_domain() -> None:
    assert in_domain("db", "cloud-b") == "db@cloud-b"
    assert in_domain("", "cloud-b") == "@cloud-b"  # every record of cloud-b
    assert in_domain("db", "") == "db"
    with pytest.raises(CliError, match="names its domain already"):
        in_domain("db@cloud-c", "cloud-b")
