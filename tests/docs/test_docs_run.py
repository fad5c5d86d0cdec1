"""The docs work as written: every ```` ```sh ```` block of README.md and docs/*.md runs, in
order, against a lab this test brings up and takes down (see :mod:`tests.docs.docrun` for the
directives that mark the few blocks that cannot run here). A failure names the doc and line of
the command that failed. Whatever happens, nothing is left behind: the lab, servers the docs
start, clients ``nsmctl connect`` started, namespaces the docs add."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import network
from lab.fabric import Fabric
from lab.processes import alive
from lab.topology import Topology
from nsmctl.node_cmds import CLIENTS_DIR
from tests.docs.docrun import Block, blocks, last_command, localise, script, split_output

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
PREFIX = "vwd"
STATE_ROOT = Path("/var/run/vwire-docs")
_counter = itertools.count(1)
# Blocks not run here, and why (kept short and honest: each one is listed in the report).
MAX_NOT_RUN = 4


def _doc_blocks(doc: str) -> list[Block]:
    return blocks(ROOT / doc, doc)


def test_every_doc_block_is_run_or_says_why_not() -> None:
    not_run = [b for doc in DOCS for b in _doc_blocks(doc) if b.directive in ("skip", "instead")]
    for block in not_run:
        print(f"not run: {block.doc}:{block.line}: {block.directive} {block.argument}")
    assert len(not_run) <= MAX_NOT_RUN, [f"{b.doc}:{b.line}" for b in not_run]
    assert sum(len(b.commands) for doc in DOCS for b in _doc_blocks(doc)
               if not b.directive or b.directive == "servers") >= 20


def _stop(pids: list[int], grace: float = 10.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for processes to exit, bounded
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _clients_started(before: set[Path]) -> list[int]:
    pids = []
    for state in set(CLIENTS_DIR.glob("*.json")) - before:
        with contextlib.suppress(OSError, ValueError):
            text = state.read_text()
            pids += [int(p) for p in re.findall(r'"pid":\s*(\d+)', text)]
    return pids


def _namespaces_added(doc_blocks: list[Block], topology: Topology) -> list[str]:
    names = []
    for block in doc_blocks:
        for command in block.commands:
            text = localise(command.text, topology.prefix, str(topology.state_dir))
            names += re.findall(r"\bip netns add (\S+)", text)
    return names


def _unix_dirs(doc_blocks: list[Block]) -> list[Path]:
    """Directories of the unix sockets that servers the docs start listen on."""
    return [Path(m).parent for b in doc_blocks if b.directive == "servers"
            for c in b.commands for m in re.findall(r"--listen unix://(\S+)", c.text)]


@pytest.fixture
def topology() -> Iterator[Topology]:
    n = next(_counter)
    topology = Topology(f"{PREFIX}{os.getpid()}-{n}-", STATE_ROOT / f"{os.getpid()}-{n}")
    yield topology
    Fabric(topology).down(grace=3.0)
    with contextlib.suppress(OSError):
        STATE_ROOT.rmdir()


def _runnable(doc: str) -> bool:
    return any(b.directive != "skip" for b in _doc_blocks(doc))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("doc", [d for d in DOCS if _runnable(d)])
def test_the_doc_runs_as_written(doc: str, topology: Topology, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the docs run needs root (namespaces, WireGuard): run it as root (CI does)")
    doc_blocks = _doc_blocks(doc)
    home, servers = tmp_path / "home", tmp_path / "servers"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NSMCTL_", "VWIRE_"))}
    env.update(PATH=f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
               HOME=str(home), PYTHONPATH=str(ROOT), VWIRE_LAB_PREFIX=topology.prefix,
               VWIRE_LAB_STATE_DIR=str(topology.state_dir))
    clients_before = set(CLIENTS_DIR.glob("*.json"))
    try:
        done = subprocess.run(
            ["bash", "-c", script(doc_blocks, topology.prefix, str(topology.state_dir),
                                  str(servers))],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=240, check=False,
        )
    finally:
        server_pids = [int(p) for p in servers.read_text().split()] if servers.exists() else []
        _stop(server_pids + _clients_started(clients_before))
        # The lab first: its down also kills wireguard-go left in the doc's own namespaces (they
        # carry the lab's prefix), which deleting the namespaces would orphan, socket and all.
        Fabric(topology).down(grace=3.0)
        for name in _namespaces_added(doc_blocks, topology):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
        for directory in _unix_dirs(doc_blocks):
            with contextlib.suppress(OSError):
                directory.rmdir()
    output = done.stdout
    logs = servers.with_suffix(".log")
    assert done.returncode == 0, (
        f"{last_command(output)}: the command failed (exit {done.returncode}); its output:\n"
        + "\n".join(output.splitlines()[-25:])
        + (f"\nservers' logs:\n{logs.read_text()[-3000:]}" if logs.exists() else ""))
    per_block = split_output(output)
    for block in doc_blocks:
        for text in block.expect:
            shown = per_block.get(f"{block.doc}:{block.line}", "")
            assert localise(text, topology.prefix, str(topology.state_dir)) in shown, (
                f"{block.doc}:{block.line}: the output does not show {text!r}:\n{shown}")
    assert network.namespaces(topology) == []
    assert not [p for p in server_pids if alive(p)]
