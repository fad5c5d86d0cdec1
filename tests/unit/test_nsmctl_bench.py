"""The benchmarks say what they are doing on stderr while they run; stdout is the result alone
(here the registry benchmark, the one that needs no root, run small)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_registry_bench_shows_progress_on_stderr_only() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.registry", "--endpoints", "40", "--watchers", "2",
         "--finds", "20", "--rounds", "2", "--store", "memory", "--max-seconds", "60", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert run.returncode in (0, 1), run.stderr  # 1: a goal missed on a busy machine
    result = json.loads(run.stdout)  # nothing but the JSON result
    assert "config" in result
    progress = [line for line in run.stderr.splitlines() if "] bench.registry: " in line]
    assert [line.split("] bench.registry: ", 1)[1] for line in progress] == [
        "registering up to 40 endpoints (memory)",
        "the peer: echo throughput",
        "20 finds by name, then by service",
        "the peer: echo latencies",
        "watch fan-out",
    ]
    assert all(line.startswith("[") and line[1:8].strip().endswith("s") for line in progress)
