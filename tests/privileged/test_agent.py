"""The node agent attests callers by SO_PEERCRED: real agent process, real pod namespaces.

Two "pods" are network namespaces with lab pod records (what ``lab/pods.py`` writes); the
workloads are real processes started in them with ``ip netns exec``. What is proved:

* a process in pod A gets ``spiffe://<td>/ns/<ns>/sa/<sa>`` of A, signed by the CA, short-lived;
* a process in pod B that *claims* to be A (in every field it can send) still gets B's identity;
* a process in no pod (the host's namespace) is refused, also when a record others could write
  names the host's namespace (a forged record is ignored);
* nsc's identity source takes the nsmgr's ID from the agent's hint; the key never hits the disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sdk.security.ca import CertificateAuthority
from tests.privileged.conftest import netns_path

pytestmark = pytest.mark.privileged

TD = "agent-test.vwire"
NSMGR_ID = f"spiffe://{TD}/nsmgr/nsmgr-n1"
_FETCH = """
import json, sys
from sdk.errors import FabricError
from sdk.security.workload import fetch
try:
    got = fetch(sys.argv[1], timeout=10)
except FabricError as exc:
    print(json.dumps({"refused": str(exc)}))
else:
    print(json.dumps({"spiffe_id": str(got.svid.spiffe_id), "not_after": got.svid.not_after,
                      "hints": got.hints, "chain": got.svid.chain_pem().decode()}))
"""
_CLAIM = """
import json, socket, struct, sys
from sdk.security.workload import decode_length, encode
claim = {"op": "x509svid", "pod": "a", "namespace": "prod", "service_account": "alpha",
         "spiffe_id": "spiffe://TD/ns/prod/sa/alpha", "pid": 1}
with socket.socket(socket.AF_UNIX) as s:
    s.settimeout(10)
    s.connect(sys.argv[1].removeprefix("unix://"))
    s.sendall(encode(claim))
    size = decode_length(s.recv(4, socket.MSG_WAITALL))
    print(json.loads(s.recv(size, socket.MSG_WAITALL)).get("spiffe_id", "refused"))
""".replace("TD", TD)


def _record(pods: Path, name: str, namespace: str, sa: str, netns: str, mode: int = 0o644
            ) -> None:
    path = pods / f"{name}.json"
    path.write_text(json.dumps({"name": name, "namespace": namespace, "service_account": sa,
                                "uid": f"uid-{name}", "netns": netns}))
    path.chmod(mode)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Path, Path, CertificateAuthority]]:
    """A running ``python -m agent`` (socket, pod records dir, CA); always stopped."""
    ca = CertificateAuthority.init(tmp_path / "ca", TD)
    pods = tmp_path / "pods"
    pods.mkdir(mode=0o755)
    sock = tmp_path / "agent" / "agent.sock"
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "--socket", str(sock), "--ca-dir", str(tmp_path / "ca"),
         "--pods", f"lab:{pods}", "--ttl", "120", "--nsmgr-id", NSMGR_ID],
        stdout=log, stderr=log, cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None, (tmp_path / "agent.log").read_text()
            assert time.monotonic() < deadline, "the agent did not open its socket"
            time.sleep(0.05)  # polling for the socket, bounded by the deadline
        yield sock, pods, ca
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    assert not sock.exists(), "the agent left its socket behind"


def _ask(sock: Path, netns: str | None, script: str = _FETCH) -> dict[str, object] | str:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    out = subprocess.run([*prefix, sys.executable, "-c", script, f"unix://{sock}"],
                         capture_output=True, text=True, timeout=30, check=True,
                         cwd=Path(__file__).parents[2]).stdout.strip()
    last = out.splitlines()[-1]  # structlog may have printed before it
    return json.loads(last) if script is _FETCH else last


def test_each_pod_gets_its_own_identity(agent: tuple[Path, Path, CertificateAuthority],
                                        netns: Callable[[str], str]) -> None:
    sock, pods, ca = agent
    pod_a, pod_b = netns("poda"), netns("podb")
    _record(pods, "a", "prod", "alpha", netns_path(pod_a))
    _record(pods, "b", "dev", "beta", netns_path(pod_b))
    got_a = _ask(sock, pod_a)
    assert isinstance(got_a, dict)
    assert got_a["spiffe_id"] == f"spiffe://{TD}/ns/prod/sa/alpha"
    assert got_a["hints"] == {"nsmgr_id": NSMGR_ID}
    assert float(str(got_a["not_after"])) <= time.time() + 121  # short-lived, as configured
    from sdk.security.svid import load_certificates
    leaf = load_certificates(str(got_a["chain"]).encode(), "chain")[0]
    assert ca.issued(leaf)
    got_b = _ask(sock, pod_b)
    assert isinstance(got_b, dict)
    assert got_b["spiffe_id"] == f"spiffe://{TD}/ns/dev/sa/beta"


def test_a_pod_claiming_another_pods_identity_gets_its_own(
        agent: tuple[Path, Path, CertificateAuthority], netns: Callable[[str], str]) -> None:
    sock, pods, _ca = agent
    pod_a, pod_b = netns("poda"), netns("podb")
    _record(pods, "a", "prod", "alpha", netns_path(pod_a))
    _record(pods, "b", "dev", "beta", netns_path(pod_b))
    assert _ask(sock, pod_b, _CLAIM) == f"spiffe://{TD}/ns/dev/sa/beta"


def test_a_process_in_no_pod_is_refused(agent: tuple[Path, Path, CertificateAuthority],
                                        netns: Callable[[str], str]) -> None:
    sock, pods, _ca = agent
    _record(pods, "a", "prod", "alpha", netns_path(netns("poda")))
    assert "runs in no pod" in _refusal(_ask(sock, None))
    # A record anyone could have written naming the host's namespace is not believed.
    _record(pods, "forged", "prod", "alpha", f"/proc/{os.getpid()}/ns/net", mode=0o666)
    assert "runs in no pod" in _refusal(_ask(sock, None))
    # A namespace of no pod record (a fresh one) is refused too.
    assert "runs in no pod" in _refusal(_ask(sock, netns("other")))


def _refusal(answer: dict[str, object] | str) -> str:
    assert isinstance(answer, dict) and "refused" in answer, answer
    return str(answer["refused"])


def test_nsc_takes_its_identity_and_nsmgr_id_from_the_agent(
        agent: tuple[Path, Path, CertificateAuthority], netns: Callable[[str], str]) -> None:
    sock, pods, _ca = agent
    pod_a = netns("poda")
    _record(pods, "a", "prod", "alpha", netns_path(pod_a))
    script = ("import sys\nfrom nsc.identity import svid_source\n"
              "src, nsmgr = svid_source('', sys.argv[1], '')\n"
              "print(src.current().spiffe_id, nsmgr)")
    out = _ask(sock, pod_a, script)
    assert out == f"spiffe://{TD}/ns/prod/sa/alpha {NSMGR_ID}"
