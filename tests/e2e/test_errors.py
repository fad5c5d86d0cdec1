"""Errors a user meets first: an unknown service (NOT_FOUND naming it) and malformed NSM URLs."""

from __future__ import annotations

import pytest

from lab.processes import run_module
from lab.topology import netns_path
from sdk.errors import InvalidArgument
from sdk.nsmurl import parse
from tests.e2e.conftest import MakeFabric

BAD_URLS = {
    "secure-db/nsm0": "no mechanism scheme",
    "http://secure-db/nsm0": "mechanism",
    "kernel://Secure_DB/nsm0": "url.network_service",
    "kernel://db/an-interface-name-too-long": "url.interface",
    "kernel://db/nsm0?app": "label 'app' has no value",
    "kernel://db/nsm0?app=a&app=b": "given twice",
}


async def test_unknown_service_is_not_found_naming_it(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(nodes=1)
    await fabric.add_endpoint("nse-a", ["known"], node=1)
    netns = fabric.add_workload_netns(1, "nsc")
    done = await run_module([
        "nsc", "kernel://no-such-service/nsm0", "--nsmgr", f"unix://{fabric.node(1).nsmgr_socket}",
        "--netns", netns_path(netns), "--timeout", "5",
        *fabric.client_identity_args(1, "nsc-unknown"),
    ], timeout=30)
    assert done.returncode != 0
    assert "'no-such-service'" in done.stderr and "not found" in done.stderr, done.stderr
    assert not fabric.vwire_links(), "a failed request leaves nothing"


@pytest.mark.parametrize("url", list(BAD_URLS))
def test_bad_nsm_url_names_the_problem(url: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse(url, "url")
    assert BAD_URLS[url] in str(caught.value), str(caught.value)


async def test_nsc_rejects_a_bad_url_before_connecting() -> None:
    done = await run_module(["nsc", "http://secure-db/nsm0", "--nsmgr", "unix:///nonexistent.sock"],
                            timeout=30)
    assert done.returncode != 0
    assert "http" in done.stderr and "kernel" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
