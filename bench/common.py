"""Helpers shared by the benchmarks: percentiles, a result table and JSON output.

A benchmark that runs a lab fabric does it inside :func:`running` (stopped however the benchmark
ends, its logs kept when it fails). A benchmark collects :class:`Metric` values (name, value,
unit, optional goal) and hands them to :func:`report`, which prints a readable table (metric,
value, goal, ok?) or one JSON object. Goals are upper bounds (``value < goal``) unless
``higher_is_better`` is set. While it runs it says what it is doing on stderr
(:func:`progress`), so stdout stays the result alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forwarder.wireguard.uapi import socket_path
from lab.fabric import Fabric
from lab.observe import wait_for
from sdk.grpcutil import unix_socket_accepts

#: Where a failed benchmark leaves its fabric's logs.
FAILED_LOGS = Path("/tmp/vwire-bench-logs")

_STARTED = time.monotonic()


@contextlib.contextmanager
def running(bench: str, fabric: Fabric) -> Iterator[Fabric]:
    """Stop ``fabric`` (and its state directory's parent when no other run uses it) however the
    block ends; when it fails, keep the fabric's logs in :data:`FAILED_LOGS` and say so."""
    try:
        yield fabric
    except BaseException as exc:
        shutil.rmtree(FAILED_LOGS, ignore_errors=True)
        fabric.save_logs(FAILED_LOGS)
        exc.add_note(f"the fabric's logs are kept in {FAILED_LOGS}")
        raise
    finally:
        with contextlib.suppress(OSError):  # stderr closed (e.g. a pipe into `head`): stop anyway
            progress(bench, "stopping the fabric")
        fabric.down(grace=3.0)
        with contextlib.suppress(OSError):
            fabric.topology.state_dir.parent.rmdir()


def progress(bench: str, message: str) -> None:
    """One line on stderr, ``[  12.3s] bench: message``: what the benchmark is doing now."""
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {bench}: {message}", file=sys.stderr, flush=True)


def percentile(samples: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0..100) of ``samples`` by the nearest-rank method."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds: float) -> float:
    """Seconds → milliseconds, rounded for display."""
    return round(seconds * 1000, 3)


@dataclass(frozen=True)
class Metric:
    """One measured figure and, optionally, the goal it is held to."""

    name: str
    value: float
    unit: str = ""
    goal: float | None = None
    higher_is_better: bool = False

    @property
    def ok(self) -> bool | None:
        """Whether the goal is met (None when there is no goal)."""
        if self.goal is None:
            return None
        return self.value > self.goal if self.higher_is_better else self.value < self.goal

    def goal_text(self) -> str:
        if self.goal is None:
            return ""
        return f"{'>' if self.higher_is_better else '<'} {self.goal:g} {self.unit}".rstrip()


class Deadline:
    """A wall-clock budget for a whole benchmark: loops check it besides their counts."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def expired(self) -> bool:
        return self.left() <= 0


def table(metrics: Sequence[Metric]) -> str:
    """A plain-text table: metric, value, goal, ok?"""
    rows = [("metric", "value", "goal", "ok?")]
    for m in metrics:
        ok = "" if m.ok is None else ("yes" if m.ok else "NO")
        rows.append((m.name, f"{m.value:,.3f} {m.unit}".rstrip(), m.goal_text(), ok))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def as_json(metrics: Sequence[Metric], config: dict[str, Any]) -> str:
    """One JSON object: every metric by name, plus ``config``, ``goals`` and overall ``ok``."""
    out: dict[str, Any] = {m.name: m.value for m in metrics}
    goals = {
        m.name: {"goal": m.goal, "unit": m.unit, "ok": m.ok} for m in metrics if m.goal is not None
    }
    out["goals"] = goals
    out["ok"] = all(g["ok"] for g in goals.values())
    out["config"] = config
    return json.dumps(out, indent=2, sort_keys=False)


def report(metrics: Sequence[Metric], config: dict[str, Any], json_output: bool) -> str:
    """The benchmark's output, as a table or as JSON."""
    if json_output:
        return as_json(metrics, config)
    header = ", ".join(f"{k}={v}" for k, v in config.items())
    return f"{header}\n\n{table(metrics)}"


def require_root(parser: argparse.ArgumentParser, tools: Sequence[str] = (),
                 hint: str = "scripts/setup.sh installs them") -> None:
    """Exit through ``parser`` unless this runs as root with every one of ``tools`` on PATH."""
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, wireguard-go)")
    for tool in tools:
        if shutil.which(tool) is None:
            parser.error(f"{tool} is missing ({hint})")


async def start_wireguard_go(netns: str, ifname: str,
                             every: float = 0.002) -> asyncio.subprocess.Process:
    """A hand-made peer's wireguard-go for ``ifname`` in ``netns``, once its UAPI socket
    answers (the benchmarks' reference: no fabric around it)."""
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netns, "wireguard-go", "-f", ifname,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    sock = socket_path(ifname)

    async def up() -> bool:
        return unix_socket_accepts(sock)

    await wait_for(f"wireguard-go {ifname}", up, 5.0, every=every)
    return process
