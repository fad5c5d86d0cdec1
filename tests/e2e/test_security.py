"""Path tokens and SVID rotation in a real fabric (every process has an SVID of the lab's CA).

* Every hop of a remote connection signs its segment for the next hop, and the chain of subjects
  and audiences is the path (client → nsmgr → forwarder → nsmgr → remote nsmgr → … → endpoint).
* A client without an SVID, or one whose token is addressed to another node's nsmgr, is refused
  with the reason, and nothing is programmed for it.
* Re-issuing every SVID under a live connection keeps traffic flowing: the next refreshes are
  signed with the new SVIDs, the connection keeps its id, and nodes keep talking mTLS.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from lab.fabric import Fabric
from lab.observe import endpoint_address, ping, wait_for
from lab.processes import run_module
from lab.topology import netns_path
from sdk.security import token
from sdk.security.ca import CertificateAuthority
from sdk.security.svid import CERT_FILE
from tests.e2e.conftest import MakeFabric

# A reply later than this counts as lost: long enough for a loaded machine, while a broken vWire
# answers never.
PING_WAIT = 2.0
LIFETIME = 3.0


def _claims(conn: dict[str, Any], fabric: Fabric) -> list[token.Claims]:
    bundle = CertificateAuthority.load(fabric.topology.state_dir / "ca").bundle  # as on disk now
    segments = conn["path"]["path_segments"]
    return [token.verify(s["token"], bundle, allow_expired=True)
            for s in segments if s.get("token")]


def _signer_serial(token_text: str) -> int:
    header = token_text.split(".")[0]
    doc = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    return x509.load_der_x509_certificate(base64.b64decode(doc["x5c"][0])).serial_number


def _serial_on_disk(directory: Path) -> int:
    return x509.load_pem_x509_certificate((directory / CERT_FILE).read_bytes()).serial_number


def _issuer_on_disk(directory: Path) -> x509.Name:
    return x509.load_pem_x509_certificate((directory / CERT_FILE).read_bytes()).issuer


async def test_every_hop_signs_its_segment_for_the_next(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(nodes=2)
    await fabric.add_endpoint("nse-db", ["db"], node=2)
    client = await fabric.add_client("nsc", node=1, urls=["kernel://db/nsm0"])
    conn = await fabric.signed_connection(client)
    names = [s["name"] for s in conn["path"]["path_segments"]]
    claims = _claims(conn, fabric)
    assert len(claims) == len(names) - 1, "every hop but the endpoint signs"
    kinds = ["nsc", "nsmgr", "forwarder", "nsmgr", "forwarder", "nse"]
    expected = [Fabric.spiffe_id(kind, name) for kind, name in zip(kinds, names, strict=True)]
    assert [c.subject for c in claims] == expected[:-1]
    assert [c.audience for c in claims] == expected[1:], "each token is for the next hop"
    segments = conn["path"]["path_segments"]
    assert all(c.segment_id == s["id"] for c, s in zip(claims, segments, strict=False))
    assert await ping(client.netns, endpoint_address(conn))
    assert fabric.processes.pid_of("ca-agent") is not None, "the SVID renewal agent runs"

    shown = client.connection()["path"]["path_segments"]  # the client's report: fingerprints
    assert [s.get("token", "") for s in shown] == [
        "sha256:" + token.token_hash(s["token"])[:16] if s.get("token") else ""
        for s in segments]
    logs = "".join(p.read_text(errors="replace") for p in fabric.processes.dir.iterdir()
                   if p.suffix in (".log", ".out"))  # every process's log and output
    logs += client.state_file.read_text()
    assert "PRIVATE KEY" not in logs
    for key_file in fabric.identities_dir.rglob("svid.key"):
        body = "".join(key_file.read_text().splitlines()[1:-1])
        assert body[:40] not in logs, f"key material of {key_file} is in a log"
    for segment in segments:
        if segment.get("token"):
            assert segment["token"].split(".")[2] not in logs, "a token signature is in a log"


async def test_unsigned_and_misaddressed_requests_are_refused(make_fabric: MakeFabric) -> None:
    fabric = await make_fabric(nodes=2)
    await fabric.add_endpoint("nse-db", ["db"], node=2)
    netns = fabric.add_workload_netns(1, "intruder")
    base = ["nsc", "kernel://db/nsm0", "--nsmgr", f"unix://{fabric.node(1).nsmgr_socket}",
            "--netns", netns_path(netns), "--timeout", "5", "--no-probe"]

    unsigned = await run_module(base, timeout=20)
    assert unsigned.returncode == 1
    assert "path segment 0 (nsc-" in unsigned.stderr, unsigned.stderr
    assert "is not signed" in unsigned.stderr, unsigned.stderr

    wrong_audience = await run_module(
        [*base, "--svid-dir", str(fabric.identity("nsc", "intruder")),
         "--nsmgr-id", fabric.nsmgr_id(2)], timeout=20)
    assert wrong_audience.returncode == 1
    assert f"is for {fabric.nsmgr_id(2)}, not {fabric.nsmgr_id(1)}" in wrong_audience.stderr, (
        wrong_audience.stderr)

    assert fabric.vwire_links() == {}, "nothing was programmed for refused requests"
    assert all(not conns for conns in (await fabric.nsmgr_connections()).values())


async def _traffic_survives(fabric: Fabric, rotate: Callable[[], Awaitable[None]]) -> None:
    """With a connection n1 → n2 refreshed every second: ``rotate()`` the identities, then wait
    until every hop signs with the SVID now on disk; pings must keep passing, the connection must
    keep its id (refreshed, never healed)."""
    await fabric.add_endpoint("nse-db", ["db"], node=2)
    client = await fabric.add_client("nsc", node=1, urls=["kernel://db/nsm0"],
                                     lifetime=LIFETIME)
    first, first_id = await fabric.signed_connection(client), client.connection()["id"]
    target = endpoint_address(first)
    await wait_for("first ping", lambda: ping(client.netns, target, wait=0.5), 10)
    before = [_signer_serial(s["token"]) for s in first["path"]["path_segments"][:-1]]

    await rotate()
    rotated = {fabric.spiffe_id(kind, name): _serial_on_disk(directory)
               for directory in fabric.identities
               for kind, name in [directory.relative_to(directory.parents[1]).parts]}
    assert len(rotated) >= 6

    async def signed_with_new_svids() -> bool:
        conn = await fabric.signed_connection(client)
        segments = conn.get("path", {}).get("path_segments", [])[:-1]
        return bool(segments) and all(
            _signer_serial(s["token"]) == rotated[c.subject]
            for s, c in zip(segments, _claims(conn, fabric), strict=True)
        )

    start, pings, lost = time.monotonic(), 0, 0
    while not await signed_with_new_svids():  # bounded: FileSvidSource polls every second
        assert time.monotonic() - start < 6 * LIFETIME, "the refreshes never used the new SVIDs"
        pings += 1
        lost += not await ping(client.netns, target, wait=PING_WAIT)
        await asyncio.sleep(0.2)  # pacing the pings
    for _ in range(int(LIFETIME / 0.25)):  # another token lifetime on the new SVIDs
        pings += 1
        lost += not await ping(client.netns, target, wait=PING_WAIT)
        await asyncio.sleep(0.05)  # pacing the pings
    last = await fabric.signed_connection(client)
    assert client.connection()["id"] == first_id, "no heal: refreshed, not rebuilt"
    assert last["id"] == first["id"], "the nsmgr's side kept its id too"
    after = [_signer_serial(s["token"]) for s in last["path"]["path_segments"][:-1]]
    assert not set(before) & set(after), "every hop signs with its new SVID"
    assert lost <= 1, f"{lost} of {pings} pings lost during the rotation"
    assert client.events()[-1]["connection"]["id"] == first_id


async def test_rotating_every_svid_under_a_live_connection_keeps_traffic(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric(nodes=2, token_lifetime=LIFETIME)

    async def reissue() -> None:
        fabric.rotate_identities(ttl=3600)

    await _traffic_survives(fabric, reissue)


async def test_rotating_the_root_under_a_live_connection_keeps_traffic(
    make_fabric: MakeFabric,
) -> None:
    fabric = await make_fabric(nodes=2, token_lifetime=LIFETIME)
    ca_dir = str(fabric.topology.state_dir / "ca")
    agent = ["nsmctl", "ca", "agent", "--dir", ca_dir, "--svids", str(fabric.identities_dir),
             "--once"]

    async def new_root() -> None:
        done = await run_module(["nsmctl", "ca", "rotate-root", "--dir", ca_dir])
        assert done.returncode == 0, done.stderr
        bundles = await run_module(agent)
        assert bundles.stdout.count("updated the trust bundle") >= 6, bundles.stdout
        # Every process re-reads its files within a second (FileSvidSource's poll): the time
        # passing is the subject here. Only then may anyone present a new-root SVID.
        await asyncio.sleep(1.5)
        svids = await run_module(agent)
        assert svids.stdout.count("renewed") >= 6, svids.stdout

    await _traffic_survives(fabric, new_root)
    rotated = CertificateAuthority.load(Path(ca_dir))
    assert len(rotated.bundle.roots) == 2
    for directory in fabric.identities:
        assert _issuer_on_disk(directory) == rotated.root.subject, "renewed from the new root"
