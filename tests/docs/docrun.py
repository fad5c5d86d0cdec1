"""Run the shell blocks of the project's Markdown docs, in order, as written.

A doc's ```` ```sh ```` blocks are what a user types on one machine. :func:`blocks` extracts them
with their line numbers; :func:`script` turns one doc into one bash script (so ``eval`` and
``export`` carry over from block to block) that marks every command with its ``file:line``
before running it and stops at the first command that fails (``set -e -o pipefail``).

Directives are HTML comments, invisible when the doc is rendered, on the line(s) right before a
block (or, for ``expect``, right after it):

``<!-- docs-test: skip REASON -->``
    the block is not run (cloud, a real cluster, ...); the reason is required.
``<!-- docs-test: instead COMMAND -->``
    the block is not run; COMMAND is (the quick start: CI runs its two commands itself, the
    docs run brings the lab up with ``nsmctl lab up`` instead).
``<!-- docs-test: servers -->``
    the block's ``python -m ...`` lines are servers: each is started in the background (as the
    doc tells the reader to do in another terminal), waited for until its ``--listen`` address
    accepts connections, and stopped with SIGTERM when the doc is done.
``<!-- docs-test: expect TEXT -->`` (after a block)
    the output of the block above must contain TEXT.

The lab runs under the test's own prefix and state directory (``VWIRE_LAB_PREFIX``,
``VWIRE_LAB_STATE_DIR``), so a user's lab is never touched; the one rewriting of a doc's text is
that the default lab's names in commands (``vwl-``, ``/var/run/vwire-lab``) become the test's.
"""

from __future__ import annotations

import itertools
import re
import shlex
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

DIRECTIVE = re.compile(r"^<!--\s*docs-test:\s*(\w+)\s*(.*?)\s*-->$")
MARK = "@@docs-test"
LAB_PREFIX = "vwl-"
LAB_STATE_DIR = "/var/run/vwire-lab"


@dataclass
class Command:
    line: int  #: 1-based line of the doc where the command starts
    text: str  #: continuation lines joined


@dataclass
class Block:
    doc: str
    line: int  #: line of the opening fence
    commands: list[Command]
    directive: str = ""  #: skip, instead, servers or "" (run)
    argument: str = ""
    expect: list[str] = field(default_factory=list)


def _commands(lines: list[str], first: int) -> list[Command]:
    commands: list[Command] = []
    pending: list[str] = []
    start = first
    for number, raw in enumerate(lines, first):
        if not pending:
            start = number
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        commands.append(Command(start, " ".join([*pending, raw]).strip()))
        pending = []
    return commands


def _directives(lines: list[str], index: int, step: int) -> list[tuple[str, str]]:
    """The directives on consecutive lines from ``index`` going by ``step`` (blank lines end
    nothing before a block; they do after one)."""
    found = []
    while 0 <= index < len(lines):
        match = DIRECTIVE.match(lines[index].strip())
        if not match:
            break
        found.append((match.group(1), match.group(2)))
        index += step
    return found


def blocks(path: Path, name: str) -> list[Block]:
    """The ```` ```sh ```` blocks of a Markdown file, with their directives."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        if lines[index].strip() != "```sh":
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        block = Block(name, index + 1, _commands(lines[index + 1:end], index + 2))
        for kind, argument in _directives(lines, index - 1, -1):
            if kind not in ("skip", "instead", "servers"):
                raise ValueError(f"{name}:{index}: unknown docs-test directive {kind!r}")
            if kind in ("skip", "instead") and not argument:
                raise ValueError(f"{name}:{index}: docs-test {kind} needs a reason/command")
            block.directive, block.argument = kind, argument
        block.expect = [arg for kind, arg in _directives(lines, end + 1, 1) if kind == "expect"]
        found.append(block)
        index = end + 1
    return found


def localise(command: str, prefix: str, state_dir: str) -> str:
    """The command with the default lab's names replaced by the test lab's."""
    return command.replace(LAB_STATE_DIR, state_dir).replace(LAB_PREFIX, prefix)


def _listen_address(command: str) -> str:
    words = shlex.split(command)
    for flag, value in itertools.pairwise(words):
        if flag == "--listen":
            return value
    raise ValueError(f"a server without --listen cannot be waited for: {command}")


def wait_listening(address: str, timeout: float = 20.0) -> None:
    """Poll (bounded) until a server accepts connections at ``unix:///path`` or
    ``tcp://host:port``."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(*_family(address)) as probe:
            try:
                probe.connect(_target(address))
                return
            except OSError:
                if time.monotonic() > deadline:
                    message = f"nothing listens on {address} after {timeout:g} s"
                    raise TimeoutError(message) from None
        time.sleep(0.05)  # polling a server that is starting, bounded by the deadline


def _family(address: str) -> tuple[int, int]:
    if address.startswith("unix://"):
        return socket.AF_UNIX, socket.SOCK_STREAM
    return socket.AF_INET, socket.SOCK_STREAM


def _target(address: str) -> str | tuple[str, int]:
    if address.startswith("unix://"):
        return address.removeprefix("unix://")
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    return host, int(port)


def script(doc_blocks: list[Block], prefix: str, state_dir: str, servers_file: str) -> str:
    """One bash script running every block of a doc (see the module docstring)."""
    out = ["set -e -o pipefail"]
    for block in doc_blocks:
        out.append(f"echo '{MARK} block {block.doc}:{block.line}'")
        if block.directive == "skip":
            continue
        if block.directive == "instead":
            out += [f"echo '{MARK} at {block.doc}:{block.line}'", block.argument]
            continue
        for command in block.commands:
            text = localise(command.text, prefix, state_dir)
            out.append(f"echo '{MARK} at {block.doc}:{command.line}'")
            if block.directive == "servers" and text.startswith("python -m "):
                address = _listen_address(text)
                out += [
                    f"{text} >/dev/null 2>>{shlex.quote(servers_file)}.log &",
                    f"echo $! >> {shlex.quote(servers_file)}",
                    "python -c 'import sys; from tests.docs.docrun import wait_listening; "
                    f"wait_listening(sys.argv[1])' {shlex.quote(address)}",
                ]
            else:
                out.append(text)
    out.append(f"echo '{MARK} done'")
    return "\n".join(out) + "\n"


def split_output(output: str) -> dict[str, str]:
    """The output of each block, keyed ``doc:line`` of its fence."""
    per_block: dict[str, list[str]] = {}
    current: list[str] = []
    for line in output.splitlines():
        if line.startswith(f"{MARK} block "):
            current = per_block.setdefault(line.split()[-1], [])
        elif not line.startswith(MARK):
            current.append(line)
    return {key: "\n".join(lines) for key, lines in per_block.items()}


def last_command(output: str) -> str:
    """``doc:line`` of the last command started (the one that failed, when the script did)."""
    marks = [line.split()[-1] for line in output.splitlines() if line.startswith(f"{MARK} at ")]
    return marks[-1] if marks else "(before the first command)"
