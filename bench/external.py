"""External-host benchmark: what the extra hop costs, against a pod's vWire in the same run.

Run (root): ``python -m bench.external [--json] [--seconds N] [--rounds R]``.

A two-node lab fabric (namespaces ``vwb<pid>-...``, removed at the end whatever happens): an
endpoint for ``db`` on node 2 (``iperf3 -s`` is started in its namespace per measurement), a
reference client (``nsc``, no probes) on node 1, and the external-host router on node 1 with one
external host on the underlay bridge configured only from its exported file (what wg-quick does,
on wireguard-go).

Rows: ``pod_vwire`` — single-stream ``iperf3`` from the client's namespace to the endpoint over
its vWire; ``external_host`` — the same from the external host to the service's stable address
(host → WireGuard → router namespace (NAT) → vWire → endpoint). Interleaved, ``--rounds`` times,
best round kept (CPU-bound on shared cores: the best is the least disturbed). Ratio
``external_vs_pod`` (informational: the external path adds one WireGuard tunnel in wireguard-go,
so about half is expected on two cores). Setup: ``external_add`` (``nsmctl external add`` until
the router reports the host ready: router namespace, vWire, WireGuard) and ``external_remove``
(until the tunnel is gone), p50 over ``--rounds`` add/remove cycles of a second host.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import shutil
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from bench.common import Metric, ms, percentile, progress, report
from lab.external import add_host_netns, apply_config, generate_key, start_router
from lab.fabric import Fabric
from lab.observe import ping, wait_for
from lab.topology import Topology
from nsmctl.app import main as nsmctl_main

BENCH = "external"


async def nsmctl(fabric: Fabric, *args: str) -> str:
    """Run nsmctl against the fabric's registry (in a thread: it runs its own event loop)."""

    def run() -> str:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = nsmctl_main(["--registry", fabric.registry_url, *args])
        if code != 0:
            raise RuntimeError(f"nsmctl {' '.join(args)}: {err.getvalue().strip()}")
        return out.getvalue()

    return await asyncio.to_thread(run)


async def iperf(server_ns: str, client_ns: str, address: str, seconds: float) -> float:
    """Single-stream TCP throughput client -> server listening on all addresses (Gbit/s)."""
    server = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "--forceflush",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True)
    try:
        assert server.stdout is not None
        async with asyncio.timeout(5):
            while b"listening" not in (line := await server.stdout.readline()):
                if not line:
                    raise RuntimeError("iperf3 server exited before listening")
        client = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", client_ns, "iperf3", "-c", address, "-t", f"{seconds:g}", "-J",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        async with asyncio.timeout(seconds + 20):
            out, _ = await client.communicate()
    finally:
        if server.returncode is None:
            server.kill()
        await server.wait()
    result: dict[str, Any] = json.loads(out)
    return float(result["end"]["sum_received"]["bits_per_second"]) / 1e9


async def add_host(fabric: Fabric, name: str, index: int, tmp: Path) -> tuple[str, str, float]:
    """An external host made ready; (its namespace, the service address, seconds add took)."""
    netns = add_host_netns(fabric, name, index)
    private, public = generate_key(netns)
    key = tmp / f"{name}.key"
    key.write_text(private + "\n")
    start = time.monotonic()
    await nsmctl(fabric, "external", "add", name, "--service", "db", "--public-key", public)
    took = time.monotonic() - start
    config = await nsmctl(fabric, "external", "config", name)
    apply_config(netns, config, key)
    allowed = next(line for line in config.splitlines() if line.startswith("AllowedIPs"))
    return netns, allowed.split("=")[1].split(",")[0].strip().split("/")[0], took


async def measure(seconds: float, rounds: int, tmp: Path) -> list[Metric]:
    fabric = Fabric(Topology(f"vwb{os.getpid()}-", Path(f"/var/run/vwire-bench/{os.getpid()}")),
                    2)
    try:
        progress(BENCH, "fabric up")
        await fabric.up()
        endpoint = await fabric.add_endpoint("nse-db", ["db"], node=2)
        client = await fabric.add_client("nsc", node=1, urls=["kernel://db/nsm0"],
                                         extra=["--no-probe"])
        pod_target = client.connection()["context"]["ip_context"]["dst_ip_addrs"][0]
        pod_target = pod_target.split("/")[0]
        start_router(fabric, node=1)
        host, service, _ = await add_host(fabric, "bench", 0, tmp)

        async def answers() -> bool:
            return await ping(host, service, wait=0.5)

        await wait_for("the external host reaches db", answers, 30.0)
        pod, external = [], []
        for n in range(rounds):
            progress(BENCH, f"throughput round {n + 1}/{rounds}")
            pod.append(await iperf(endpoint.netns, client.netns, pod_target, seconds))
            external.append(await iperf(endpoint.netns, host, service, seconds))
        adds, removes = [], []
        for n in range(rounds):
            progress(BENCH, f"add/remove round {n + 1}/{rounds}")
            _, _, took = await add_host(fabric, f"cycle{n}", 1 + n, tmp)
            adds.append(took)
            start = time.monotonic()
            await nsmctl(fabric, "external", "remove", f"cycle{n}")
            removes.append(time.monotonic() - start)
        return [
            Metric("pod_vwire", max(pod), "Gbit/s"),
            Metric("external_host", max(external), "Gbit/s"),
            Metric("external_vs_pod", max(external) / max(pod), "x"),
            Metric("external_add_p50", ms(percentile(adds, 50)), "ms"),
            Metric("external_remove_p50", ms(percentile(removes, 50)), "ms"),
        ]
    finally:
        fabric.down(grace=3.0)
        with contextlib.suppress(OSError):
            Path("/var/run/vwire-bench").rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.external",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=5.0, help="iperf3 time per row")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (1-10)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or not shutil.which("iperf3"):
        print("bench.external needs root and iperf3", file=sys.stderr)
        return 2
    rounds = max(1, min(args.rounds, 10))
    tmp = Path(f"/tmp/vwire-bench-external-{os.getpid()}")
    tmp.mkdir(mode=0o700, exist_ok=True)
    try:
        metrics = asyncio.run(measure(args.seconds, rounds, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(report(metrics, {"seconds": args.seconds, "rounds": rounds}, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
