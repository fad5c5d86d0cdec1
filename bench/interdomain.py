"""Interdomain benchmark: cross-domain setup latency against same-domain setup, in one run.

Run (root): ``python -m bench.interdomain [--trials 50] [--json]``.

Builds a 3-node fabric with :class:`lab.fabric.Fabric` (namespaces ``vwi<pid>-...``, removed at
the end whatever happens) and splits it into two domains as the e2e tests do
(``lab/splitdomains.py``): n1 and n3 in domain a, n2 in domain b (its own trust domain,
federated), a gateway per domain. Endpoint ``nse-near`` on n3 serves ``bench-near`` (same
domain, another node); endpoint ``nse-far`` on n2 serves ``bench-far`` (domain b). An in-process
client in a namespace of n1 then requests, ``--trials`` times and alternating so both see the
same load, ``bench-near`` and ``bench-far@b``; each connection is timed from Request sent to the
reply (both ends programmed, WireGuard node to node in both cases) and closed.

The peer is the same-domain setup of the same run: ``cross_vs_same_domain_p50`` is the ratio of
the medians (goal < 2: the two gateway hops and the finds through them may at most double the
setup time), ``cross_vs_same_domain_p99`` the ratio of the 99th percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    Deadline,
    Metric,
    ms,
    percentile,
    progress,
    report,
    require_root,
    running,
)
from lab.fabric import Fabric
from lab.splitdomains import split_domains
from lab.topology import Topology
from sdk import log

NAME = "bench.interdomain"
RATIO_GOAL = 2.0


@dataclass
class Results:
    same: list[float] = field(default_factory=list)
    cross: list[float] = field(default_factory=list)


async def measure(trials: int, max_seconds: float, topology: Topology) -> Results:
    results = Results()
    deadline = Deadline(max_seconds)
    with running(NAME, Fabric(topology, 3, log_level="warning")) as fabric:
        progress(NAME, "starting a 3-node fabric and splitting it into domains a and b")
        await fabric.up()
        domains = await split_domains(fabric)
        await fabric.add_endpoint("nse-near", ["bench-near"], 3)
        await domains.add_endpoint("b", "nse-far", ["bench-far"])
        progress(NAME, f"{trials} same-domain and {trials} cross-domain setups, alternating")
        netns = fabric.add_workload_netns(1, "bclient")
        async with fabric.in_process_clients(1, netns, "bench-client") as clients:
            for i in range(trials):
                if deadline.expired():
                    break
                for service, samples in (("bench-near", results.same),
                                         ("bench-far@b", results.cross)):
                    client, seconds = await clients.connect(service, f"v{i}")
                    samples.append(seconds)
                    await clients.close(client)
    return results


def _dist(name: str, samples: Sequence[float]) -> list[Metric]:
    if not samples:
        return [Metric(f"{name}_p50", float("nan"), "ms")]
    return [Metric(f"{name}_p50", ms(percentile(samples, 50)), "ms"),
            Metric(f"{name}_p99", ms(percentile(samples, 99)), "ms")]


def metrics_of(results: Results) -> list[Metric]:
    out = [*_dist("setup_same_domain", results.same), *_dist("setup_cross_domain", results.cross)]
    if results.same and results.cross:
        for pct in (50, 99):
            ratio = percentile(results.cross, pct) / percentile(results.same, pct)
            out.append(Metric(f"cross_vs_same_domain_p{pct}", round(ratio, 2), "x",
                              RATIO_GOAL if pct == 50 else None))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.interdomain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50, help="setups of each kind")
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="wall-clock budget; the trials stop early when it runs out")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    require_root(parser)
    log.configure("warning", json=True)
    pid = os.getpid()
    topology = Topology(f"vwi{pid}-", Path(f"/var/run/vwire-bench/{pid}"))
    results = asyncio.run(measure(args.trials, args.max_seconds, topology))
    metrics = metrics_of(results)
    info = {"trials": args.trials, "nodes": 3, "samples_same": len(results.same),
            "samples_cross": len(results.cross), "wireguard": "wireguard-go (userspace)"}
    print(report(metrics, info, args.json))
    return 0 if all(m.ok is not False for m in metrics) else 1


if __name__ == "__main__":
    sys.exit(main())
