"""A single node needs no TCP: nsmgr started with only a unix socket serves (issue 19, item 5;
it once refused to start: "advertise: give a TCP listener or an advertised URL")."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

from nsmgr.app import Nsmgr
from nsmgr.settings import NsmgrSettings
from sdk.grpcutil import unix_socket_accepts


async def test_nsmgr_with_only_a_unix_socket_serves_this_node(tmp_path: Path) -> None:
    socket = tmp_path / "nsmgr.sock"
    config = dataclasses.replace(NsmgrSettings(), listen=[f"unix://{socket}"],
                                 registry=f"unix://{tmp_path}/registry.sock")
    nsmgr = Nsmgr(config)
    await nsmgr.start()
    try:
        assert [a.scheme for a in nsmgr.bound] == ["unix"]
        assert nsmgr.advertise == f"unix://{socket}"  # what local endpoints are recorded with
        assert unix_socket_accepts(socket)
    finally:
        await nsmgr.stop()


def test_the_nsmgr_process_starts_with_a_unix_socket_and_says_it_is_single_node(
    tmp_path: Path,
) -> None:
    socket = tmp_path / "nsmgr.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "nsmgr", "--listen", f"unix://{socket}",
         "--registry", f"unix://{tmp_path}/registry.sock"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "VWIRE_NSMGR_LOG_LEVEL": "info"},
    )
    assert process.stderr is not None
    lines = []
    try:
        for line in process.stderr:  # bounded: the process logs "nsmgr serving" or exits
            lines.append(line)
            if "nsmgr serving" in line:
                break
        assert process.poll() is None, "".join(lines)
        assert any("single node" in line for line in lines), "".join(lines)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
    assert not socket.exists()
