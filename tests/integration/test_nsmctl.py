"""nsmctl against a real registry: gRPC over a temporary Unix socket, in-memory store.

The registry runs on its own event loop in a background thread; the CLI runs in the test's thread
through :func:`nsmctl.app.main` (its own ``asyncio.run`` per command), or as a subprocess for the
watch, which must be stopped by a signal.
"""

from __future__ import annotations

import asyncio
import io
import json
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest
import yaml

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from nsmctl.app import main
from registry.app import Registry
from registry.store import open_store
from sdk.grpcutil import parse_address
from sdk.registry.core import Query
from tests.cli import Result
from tests.integration.background import BackgroundLoop

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "secure-db.yaml"

MANIFEST = """\
kind: NetworkService
name: secure-db
payload: IP
matches:
  - source_selector: {app: web}
    routes:
      - destination_selector: {role: primary}
        weight: 90
      - destination_selector: {role: replica}
        weight: 10
    fallthrough: true
    metadata:
      labels: {tier: gold}
---
kind: NetworkServiceEndpoint
metadata:
  name: db-primary-1
network_service_names: [secure-db]
network_service_labels:
  secure-db:
    labels: {role: primary, region: eu-west}
url: tcp://10.0.0.5:5001
"""


@dataclass
class RunningRegistry:
    """A registry serving on ``url`` from a loop in a background thread."""

    url: str
    registry: Registry
    background: BackgroundLoop

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.background.run(coroutine, timeout=10)

    def names(self) -> tuple[set[str], set[str]]:
        """The names of the registered services and endpoints."""

        async def read() -> tuple[set[str], set[str]]:
            services = self.registry.services.find(Query(NetworkService()))
            endpoints = self.registry.endpoints.find(Query(NetworkServiceEndpoint()))
            return ({e.record.name async for e in services},
                    {e.record.name async for e in endpoints})

        return self.call(read())

    def watchers(self) -> tuple[int, int]:
        """Open watches of services and of endpoints."""

        async def read() -> tuple[int, int]:
            return self.registry.service_watch.watchers, self.registry.endpoint_watch.watchers

        return self.call(read())


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short temporary directory (Unix socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="nsmctl-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def registry(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningRegistry]:
    monkeypatch.delenv("NSMCTL_REGISTRY", raising=False)
    url = f"unix://{workdir}/registry.sock"
    running = RunningRegistry(url, Registry(open_store("memory://")),
                              BackgroundLoop("registry-loop"))
    try:
        running.call(running.registry.start([parse_address(url)]))
        yield running
    finally:
        running.call(running.registry.stop(0))

        async def leftovers() -> set[asyncio.Task[Any]]:
            return asyncio.all_tasks() - {t for t in [asyncio.current_task()] if t}

        left = running.call(leftovers())
        running.background.close()
        assert not left, f"registry left tasks running: {left}"


Cli = Callable[..., Result]


@pytest.fixture
def cli(registry: RunningRegistry, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Run nsmctl in-process against the test registry: ``cli("get", "ns", stdin=...)``."""

    def invoke(*args: str, stdin: str | None = None, registry_url: str | None = None) -> Result:
        capsys.readouterr()
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["--registry", registry_url or registry.url, *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def write(workdir: Path, text: str, name: str = "manifest.yaml") -> str:
    path = workdir / name
    path.write_text(text)
    return str(path)


# -- apply, get, describe ------------------------------------------------------------------------


def test_apply_then_get_and_describe_both_kinds(
    cli: Cli, registry: RunningRegistry, workdir: Path
) -> None:
    applied = cli("apply", "-f", write(workdir, MANIFEST))
    assert applied.code == 0, applied.err
    lines = applied.out.splitlines()
    assert lines[:2] == ["networkservice/secure-db created",
                         "networkserviceendpoint/db-primary-1 created"]
    assert lines[2].startswith("  expiration_time set to ")
    assert lines[2].endswith("(the registry's default lifetime: the endpoint must refresh its "
                             "registration, or apply again)")
    assert registry.names() == ({"secure-db"}, {"db-primary-1"})

    table = cli("get", "ns")
    assert table.code == 0
    header, row = table.out.splitlines()
    assert header.split() == ["NAME", "PAYLOAD", "MATCHES"]
    assert row.startswith("secure-db") and " IP " in row
    assert "app=web → role=primary:90, role=replica:10 (fallthrough)" in row

    table = cli("get", "networkserviceendpoints")
    header, row = table.out.splitlines()
    assert [h.strip() for h in header.split("   ") if h.strip()] == [
        "NAME", "SERVICES", "LABELS", "URL", "EXPIRES IN", "AGE"]
    cells = row.split()
    assert cells[:2] == ["db-primary-1", "secure-db"]
    assert "secure-db: region=eu-west,role=primary" in row and "tcp://10.0.0.5:5001" in row
    assert cells[-2].endswith("s") and cells[-2][:-1].isdigit()  # expires in, e.g. 59s
    assert cells[-1] in {"0s", "1s", "2s"}                         # age

    as_json = json.loads(cli("get", "ns", "-o", "json").out)
    assert as_json == [{
        "name": "secure-db",
        "payload": "IP",
        "matches": [{
            "source_selector": {"app": "web"},
            "routes": [
                {"destination_selector": {"role": "primary"}, "weight": 90},
                {"destination_selector": {"role": "replica"}, "weight": 10},
            ],
            "fallthrough": True,
            "metadata": {"labels": {"tier": "gold"}},
        }],
    }]
    one = json.loads(cli("get", "nse", "db-primary-1", "-o", "json").out)
    assert one["name"] == "db-primary-1"
    assert one["network_service_labels"] == {
        "secure-db": {"labels": {"role": "primary", "region": "eu-west"}}}
    assert one["expiration_time"].endswith("Z") and one["initial_registration_time"]

    as_yaml = yaml.safe_load(cli("get", "nse", "-o", "yaml").out)
    assert [r["name"] for r in as_yaml] == ["db-primary-1"]
    assert as_yaml[0]["url"] == "tcp://10.0.0.5:5001"
    assert yaml.safe_load(cli("get", "ns", "secure-db", "-o", "yaml").out)["payload"] == "IP"

    ns = cli("describe", "ns", "secure-db")
    assert ns.code == 0
    words = [" ".join(line.split()) for line in ns.out.splitlines()]
    for expected in ("Name: secure-db", "Kind: NetworkService", "Payload: IP", "Matches: 1",
                     "Match 1:", "Source selector: app=web", "Fallthrough: true",
                     "Metadata labels: tier=gold", "Routes:", "- role=primary weight 90",
                     "- role=replica weight 10", "Path IDs: <none>"):
        assert expected in words, ns.out

    nse = cli("describe", "nse", "db-primary-1")
    assert nse.code == 0
    lines = nse.out.splitlines()
    words = [" ".join(line.split()) for line in lines]
    assert "URL: tcp://10.0.0.5:5001" in words
    assert "Labels: region=eu-west, role=primary" in words
    value_columns = {len(line) - len(line.split(":", 1)[1].lstrip())
                     for line in lines if not line.startswith(" ") and not line.endswith(":")}
    assert len(value_columns) == 1, f"values are not aligned:\n{nse.out}"
    expires = next(line for line in lines if line.startswith("Expires:"))
    assert "Z (in " in expires and expires.endswith("s)")
    registered = next(line for line in lines if line.startswith("Registered:"))
    assert registered.endswith(" ago)")


def test_apply_from_stdin_and_the_shipped_example(
    cli: Cli, registry: RunningRegistry
) -> None:
    result = cli("apply", "-f", "-", stdin=EXAMPLE.read_text())
    assert result.code == 0, result.err
    lines = [line for line in result.out.splitlines() if not line.startswith("  ")]
    assert lines == [
        "networkservice/secure-db created",
        "networkserviceendpoint/db-primary-1 created",
        "networkserviceendpoint/db-replica-1 created",
    ]
    assert registry.names() == ({"secure-db"}, {"db-primary-1", "db-replica-1"})
    # Applying again replaces the records: nothing the manifest sets changed.
    again = cli("apply", "-f", str(EXAMPLE))
    assert again.code == 0
    assert [line for line in again.out.splitlines() if not line.startswith("  ")] == [
        "networkservice/secure-db unchanged",
        "networkserviceendpoint/db-primary-1 unchanged",
        "networkserviceendpoint/db-replica-1 unchanged",
    ]
    assert registry.names() == ({"secure-db"}, {"db-primary-1", "db-replica-1"})


def test_apply_says_what_changed_and_what_the_registry_adjusted(
    cli: Cli, registry: RunningRegistry, workdir: Path
) -> None:
    owned = NetworkService(name="secure-db", payload="IP", path_ids=["spiffe://lab.local/nse/db"])
    registry.call(registry.registry.services.register(owned))
    capped = MANIFEST.replace("url: tcp://10.0.0.5:5001",
                              "url: tcp://10.0.0.5:5001\nexpiration_time: '2099-01-01T00:00:00Z'")
    result = cli("apply", "-f", write(workdir, capped))
    assert result.code == 0, result.err
    service, endpoint, note = result.out.splitlines()
    assert service == ("networkservice/secure-db configured: replaced the record registered by "
                       "spiffe://lab.local/nse/db; changed: matches")
    assert endpoint == "networkserviceendpoint/db-primary-1 created"
    assert note.startswith("  expiration_time capped to ")
    assert note.endswith("(the registry's maximum lifetime; asked 2099-01-01T00:00:00Z)")

    relabelled = MANIFEST.replace("region: eu-west", "region: us-east")
    second = cli("apply", "-f", write(workdir, relabelled))
    assert second.out.splitlines()[:2] == [
        "networkservice/secure-db unchanged",
        "networkserviceendpoint/db-primary-1 configured: replaced the record registered before "
        "(by an endpoint, the lab or another apply); changed: network_service_labels",
    ]


def test_empty_listing(cli: Cli) -> None:
    result = cli("get", "nse")
    assert (result.code, result.out) == (0, "")
    assert "No network service endpoints found." in result.err
    assert json.loads(cli("get", "ns", "-o", "json").out) == []


# -- delete and missing names ---------------------------------------------------------------------


def test_delete_then_not_found(cli: Cli, registry: RunningRegistry, workdir: Path) -> None:
    assert cli("apply", "-f", write(workdir, MANIFEST)).code == 0

    deleted = cli("delete", "nse", "db-primary-1")
    assert (deleted.code, deleted.out) == (0, "networkserviceendpoint/db-primary-1 deleted\n")
    deleted = cli("delete", "networkservice", "secure-db")
    assert (deleted.code, deleted.out) == (0, "networkservice/secure-db deleted\n")
    assert registry.names() == (set(), set())

    again = cli("delete", "nse", "db-primary-1")
    assert again.code == 1
    assert again.err == "error: network service endpoint 'db-primary-1' not found\n"


@pytest.mark.parametrize("command", [("get",), ("describe",), ("delete",)])
def test_missing_name_is_an_error(cli: Cli, command: tuple[str, ...]) -> None:
    result = cli(*command, "ns", "x")
    assert result.code == 1
    assert result.err == "error: network service 'x' not found\n"
    assert result.out == ""


# -- bad input ------------------------------------------------------------------------------------

BAD_MANIFESTS = {
    "unknown field": (
        MANIFEST + "---\nkind: NetworkServiceEndpoint\nname: db-2\nurl: tcp://h:1\n"
        "network_service_names: [secure-db]\nnetwork_servce_labels: {}\n",
        "document 3 (NetworkServiceEndpoint 'db-2'): network_servce_labels: unknown field; "
        "accepted: name, network_service_names, network_service_labels, url, expiration_time, "
        "initial_registration_time, path_ids",
    ),
    "unknown nested field": (
        MANIFEST + "---\nkind: NetworkService\nname: other\nmatches: [{routes: [{wieght: 1}]}]\n",
        "document 3 (NetworkService 'other'): matches[0].routes[0].wieght: unknown field; "
        "accepted: destination_selector, weight",
    ),
    "unknown kind": (
        MANIFEST + "---\nkind: Service\nname: x\n",
        "document 3 (Service 'x'): kind: unknown kind 'Service'; "
        "accepted: NetworkService, NetworkServiceEndpoint",
    ),
    "registry rule": (
        MANIFEST + "---\nkind: NetworkServiceEndpoint\nname: db-2\nurl: http://h\n",
        "document 3 (NetworkServiceEndpoint 'db-2'): url: 'http://h' has unknown scheme 'http'",
    ),
    "wrong type": (
        MANIFEST + "---\nkind: NetworkService\nname: x\nmatches: {}\n",
        "document 3 (NetworkService 'x'): matches: must be a list (got dict)",
    ),
    "missing name": (
        MANIFEST + "---\nkind: NetworkService\npayload: IP\n",
        "document 3: name: missing",
    ),
    "invalid YAML": (MANIFEST + "---\nkind: [\n", "not valid YAML at line"),
}


@pytest.mark.parametrize("case", BAD_MANIFESTS)
def test_bad_manifest_applies_nothing(
    cli: Cli, registry: RunningRegistry, workdir: Path, case: str
) -> None:
    text, message = BAD_MANIFESTS[case]
    path = write(workdir, text)
    result = cli("apply", "-f", path)
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith(f"error: {path}: ")
    assert message in result.err
    assert len(result.err.splitlines()) == 1
    assert "Traceback" not in result.err
    assert registry.names() == (set(), set())


def test_unreadable_file(cli: Cli, workdir: Path) -> None:
    result = cli("apply", "-f", str(workdir / "missing.yaml"))
    assert result.code == 1
    assert result.err == f"error: cannot read {workdir}/missing.yaml: No such file or directory\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("get", "pods"), "'pods' is not one of 'ns', 'networkservice'"),
        (("get", "ns", "-o", "xml"), "'xml' is not one of 'table', 'json', 'yaml'"),
        (("describe", "ns"), "Missing argument 'NAME'"),
        (("apply",), "Missing option '--filename' / '-f'"),
        (("--timeout", "0", "get", "ns"), "must be more than 0 seconds"),
    ],
)
def test_usage_errors_exit_2(cli: Cli, args: tuple[str, ...], message: str) -> None:
    result = cli(*args)
    assert result.code == 2
    assert result.err.startswith("error: ") and message in result.err, result.err
    assert len(result.err.splitlines()) == 1


def test_bad_registry_address_is_a_usage_error(cli: Cli) -> None:
    result = cli("get", "ns", registry_url="http://x")
    assert result.code == 2
    assert "unknown scheme 'http'" in result.err


# -- reaching the registry ------------------------------------------------------------------------


def test_unreachable_registry(cli: Cli, workdir: Path) -> None:
    url = f"unix://{workdir}/nothing.sock"
    for args in (("get", "ns"), ("delete", "nse", "x"), ("describe", "ns", "x")):
        result = cli(*args, registry_url=url)
        assert result.code == 1
        assert result.err == (
            f"error: cannot reach the registry at {url}: is it running? "
            "(set --registry or NSMCTL_REGISTRY)\n"
        )


def test_debug_shows_the_traceback(cli: Cli, workdir: Path) -> None:
    result = cli("--debug", "get", "ns", registry_url=f"unix://{workdir}/nothing.sock")
    assert result.code == 1
    assert "Traceback (most recent call last)" in result.err
    assert result.err.splitlines()[-1].startswith("error: cannot reach the registry")


def test_registry_from_environment(
    registry: RunningRegistry, workdir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("NSMCTL_REGISTRY", registry.url)
    assert main(["apply", "-f", write(workdir, MANIFEST)]) == 0
    assert main(["get", "ns", "secure-db", "-o", "json"]) == 0
    assert '"name": "secure-db"' in capsys.readouterr().out


# -- watch ----------------------------------------------------------------------------------------


def _lines(stream: IO[str]) -> queue.Queue[str]:
    """Lines of ``stream`` as they arrive, read by a daemon thread ("" at end of stream)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _poll(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_watch_json_streams_added_and_deleted(
    cli: Cli, registry: RunningRegistry, workdir: Path, stop: signal.Signals
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsmctl", "--registry", registry.url,
         "get", "nse", "--watch", "-o", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        lines = _lines(proc.stdout)
        _poll(lambda: registry.watchers() == (0, 1) or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read()

        assert cli("apply", "-f", write(workdir, MANIFEST)).code == 0
        added = json.loads(lines.get(timeout=10))
        assert added["type"] == "ADDED"
        assert added["object"]["name"] == "db-primary-1"
        assert added["object"]["url"] == "tcp://10.0.0.5:5001"

        assert cli("delete", "nse", "db-primary-1").code == 0
        deleted = json.loads(lines.get(timeout=10))
        assert (deleted["type"], deleted["object"]["name"]) == ("DELETED", "db-primary-1")

        proc.send_signal(stop)
        assert proc.wait(timeout=10) == 0
        assert lines.get(timeout=10) == ""
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_watch_table_marks_modified(cli: Cli, registry: RunningRegistry, workdir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsmctl", "--registry", registry.url, "get", "ns", "-w"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        lines = _lines(proc.stdout)
        assert lines.get(timeout=10).split() == ["EVENT", "NAME", "PAYLOAD", "MATCHES"]
        _poll(lambda: registry.watchers() == (1, 0) or proc.poll() is not None)
        assert cli("apply", "-f", write(workdir, MANIFEST)).code == 0
        assert lines.get(timeout=10).split()[:3] == ["ADDED", "secure-db", "IP"]
        assert cli("apply", "-f", write(workdir, MANIFEST)).code == 0
        assert lines.get(timeout=10).split()[:2] == ["MODIFIED", "secure-db"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
