"""Federation benchmark: what checking identities across trust domains costs.

Run: ``python -m bench.federation [--calls 2000] [--tokens 2000] [--json]``.

Measured in one run, each against its peer:

- mTLS unary calls (a health Check on one open channel, one at a time) from a ``cloud-a`` client
  to a ``cloud-b`` server that federates ``cloud-a`` and checks every call with
  :class:`sdk.security.peertrust.PeerTrust`, against the same calls from a ``cloud-b`` client to a
  server with the plain single-trust-domain credentials: ``peertrust_call_p50_vs_plain_mtls``;
- path token verification (:func:`sdk.security.token.verify`) of a ``cloud-a`` signer against a
  ``cloud-b`` :class:`sdk.security.federation.BundleSet` (three foreign trust domains), against
  verification of a local signer with the single :class:`TrustBundle`:
  ``token_verify_federated_vs_single`` (signers remembered, as in a running process) and
  ``token_first_verify_federated_vs_single`` (each token from a new signer: the chain verified).

Everything runs in one process on temporary unix sockets; loops are bounded by counts and by
``--max-seconds``. The goals (each ratio under 1.5) are this benchmark's own: federation should
cost little next to what the same check costs within one trust domain.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bench.common import Deadline, Metric, percentile, progress, report
from sdk import log
from sdk.grpcutil import parse_address
from sdk.security import token
from sdk.security.ca import CertificateAuthority
from sdk.security.federation import BundleSet
from sdk.security.peertrust import PeerTrust
from sdk.security.source import CaSvidSource
from sdk.security.svid import TrustBundle
from sdk.security.tls import secure_channel, server_credentials, server_name

NAME = "federation"
A, B = "cloud-a", "cloud-b"


@dataclass(frozen=True)
class Config:
    calls: int = 2000
    tokens: int = 2000
    first_tokens: int = 200
    max_seconds: float = 120.0


async def _serve(path: Path, source: CaSvidSource, federated: bool) -> grpc.aio.Server:
    peers = PeerTrust(source)
    server = grpc.aio.server(interceptors=[peers] if federated else [])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    credentials = peers.credentials() if federated else server_credentials(source)
    server.add_secure_port(f"unix://{path}", credentials)
    await server.start()
    return server


async def _calls(config: Config, cas: dict[str, CertificateAuthority], deadline: Deadline
                 ) -> tuple[float, float]:
    """p50 of calls to the plain server (local client) and to the PeerTrust one (foreign
    client), alternating call by call so both see the same machine load."""
    server_source = CaSvidSource(cas[B], f"spiffe://{B}/gateway/b", [server_name(B)])
    clients = (CaSvidSource(cas[B], f"spiffe://{B}/nsmgr/b1"),
               CaSvidSource(cas[A], f"spiffe://{A}/nsmgr/a1"))
    samples: tuple[list[float], list[float]] = ([], [])
    with tempfile.TemporaryDirectory(prefix="vwire-bench-fed-") as tmp:
        paths = (Path(tmp) / "plain.sock", Path(tmp) / "federated.sock")
        servers = [await _serve(paths[0], server_source, federated=False),
                   await _serve(paths[1], server_source, federated=True)]
        channels = [secure_channel(parse_address(f"unix://{p}"), c, trust_domain=B)
                    for p, c in zip(paths, clients, strict=True)]
        try:
            stubs = [health_pb2_grpc.HealthStub(ch) for ch in channels]
            for stub in stubs:  # handshakes, not measured
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            progress(NAME, f"{config.calls} mTLS calls to each server, alternating")
            for _ in range(config.calls):
                if deadline.expired():
                    break
                for stub, into in zip(stubs, samples, strict=True):
                    start = time.perf_counter()
                    await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
                    into.append(time.perf_counter() - start)
        finally:
            for channel in channels:
                await channel.close()
            for server in servers:
                await server.stop(0)
    return percentile(samples[0], 50), percentile(samples[1], 50)


def _alternating(pairs: list[tuple[str, str]], trusts: tuple[TrustBundle, BundleSet],
                 audience: str) -> tuple[float, float]:
    """Mean seconds per verification of each pair's first token with the single bundle and its
    second with the federated set, alternating so both see the same machine load."""
    spent = [0.0, 0.0]
    for pair in pairs:
        for i in (0, 1):
            start = time.perf_counter()
            token.verify(pair[i], trusts[i], audience=audience)
            spent[i] += time.perf_counter() - start
    return spent[0] / len(pairs), spent[1] / len(pairs)


def _verifies(config: Config, cas: dict[str, CertificateAuthority]) -> dict[str, float]:
    audience = f"spiffe://{B}/nse/db"
    others = [CertificateAuthority.create(td).bundle for td in ("cloud-c", "cloud-d")]
    trusts = (cas[B].bundle, BundleSet(cas[B].bundle, (cas[A].bundle, *others)))
    local_id, foreign_id = f"spiffe://{B}/nsmgr/b1", f"spiffe://{A}/nsmgr/a1"
    local_svid, foreign_svid = cas[B].issue(local_id), cas[A].issue(foreign_id)
    progress(NAME, f"{config.tokens} token verifications each way, alternating")
    pairs = [(token.sign(local_svid, audience, f"seg-{i}")[0],
              token.sign(foreign_svid, audience, f"seg-{i}")[0]) for i in range(config.tokens)]
    local, foreign = _alternating(pairs, trusts, audience)
    progress(NAME, f"{config.first_tokens} first verifications (a new signer each) each way")
    firsts = [(token.sign(cas[B].issue(local_id), audience, f"seg-{i}")[0],
               token.sign(cas[A].issue(foreign_id), audience, f"seg-{i}")[0])
              for i in range(config.first_tokens)]
    first_local, first_foreign = _alternating(firsts, trusts, audience)
    return {"local": local, "foreign": foreign, "first_local": first_local,
            "first_foreign": first_foreign}


async def run(config: Config) -> list[Metric]:
    deadline = Deadline(config.max_seconds)
    then = time.time() - 3600
    cas = {td: CertificateAuthority.create(td, now=then) for td in (A, B)}
    cas[B].federate(cas[A].bundle)
    cas[A].federate(cas[B].bundle)
    plain_p50, federated_p50 = await _calls(config, cas, deadline)
    verify = _verifies(config, cas)
    return [
        Metric("plain_mtls_call_p50", round(plain_p50 * 1e6, 1), "us"),
        Metric("peertrust_call_p50", round(federated_p50 * 1e6, 1), "us"),
        Metric("peertrust_call_p50_vs_plain_mtls", round(federated_p50 / plain_p50, 3), "x",
               goal=1.5),
        Metric("token_verify_single_us", round(verify["local"] * 1e6, 1), "us"),
        Metric("token_verify_federated_us", round(verify["foreign"] * 1e6, 1), "us"),
        Metric("token_verify_federated_vs_single",
               round(verify["foreign"] / verify["local"], 3), "x", goal=1.5),
        Metric("token_first_verify_federated_vs_single",
               round(verify["first_foreign"] / verify["first_local"], 3), "x", goal=1.5),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.federation", description=__doc__)
    parser.add_argument("--calls", type=int, default=Config.calls)
    parser.add_argument("--tokens", type=int, default=Config.tokens)
    parser.add_argument("--max-seconds", type=float, default=Config.max_seconds)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    log.configure("warning")
    config = Config(calls=max(1, args.calls), tokens=max(1, args.tokens),
                    max_seconds=args.max_seconds)
    metrics = asyncio.run(run(config))
    print(report(metrics, asdict(config), args.json))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
