"""``nsmctl dashboard``: a live web page of the fabric, served by nsmctl itself (stdlib only).

The page (``nsmctl/dashboard_static/``: HTML, CSS and a small script written for it, nothing
fetched from elsewhere; the Content-Security-Policy forbids it) polls ``GET /api/topology``
every 2 s and draws the topology as inline SVG, a connections table with live counters,
handshake age and state, and the health of the registry, nsmgrs and forwarders. A connection
that disappears stays in the table as ``GONE`` for a minute, so a vanished vWire is seen.

``/api/topology`` is :func:`nsmctl.graph.topology`, the data of ``nsmctl graph -o json``
(one source); it is gathered at most once a second whatever the number of viewers, on one
event loop in a thread of its own, so gRPC channels never cross loops. The nodes asked are
chosen as for ``graph`` (:func:`nsmctl.graph_cmds.sources`); with the lab, the lab is looked
up on every refresh, so a lab brought up again (or with more nodes) is followed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Annotated, Any

import typer

from nsmctl import graph, graph_cmds
from nsmctl.context import CliError, emit, options

DEFAULT_LISTEN = "127.0.0.1:8080"
#: Gathered data younger than this is served again instead of asking the sources anew.
FRESH_SECONDS = 1.0
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
          "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8")}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

Gather = Callable[[], Coroutine[Any, Any, dict[str, Any]]]


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as (host, port); ValueError naming the fix."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{value!r}: give HOST:PORT, e.g. {DEFAULT_LISTEN} (port 0 picks a "
                         "free one)")
    return host, int(port)


def _listen(value: str) -> str:
    try:
        parse_listen(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


class Dashboard:
    """The HTTP server and the loop that gathers (see the module docstring)."""

    def __init__(self, gather: Gather, listen: str, timeout: float) -> None:
        self.gather = gather
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever,
                                             name="dashboard-gather", daemon=True)
        self._lock = threading.Lock()
        self._cached: tuple[float, bytes] | None = None
        handler = type("Handler", (_Handler,), {"dashboard": self})
        self.server = ThreadingHTTPServer(parse_listen(listen), handler)
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        address, port = self.server.server_address[:2]
        host = address.decode() if isinstance(address, bytes) else address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def topology(self) -> bytes:
        """The topology as JSON, gathered now unless the last one is fresh."""
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < FRESH_SECONDS:
                return self._cached[1]
            future = asyncio.run_coroutine_threadsafe(self.gather(), self.loop)
            data = future.result(self.timeout * 3)
            body = json.dumps(data, ensure_ascii=False).encode()
            self._cached = (time.monotonic(), body)
            return body

    def serve(self) -> None:
        """Serve until :meth:`shutdown` (from another thread or a signal handler)."""
        self._loop_thread.start()
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self.server.server_close()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._loop_thread.join(5)
            if not self.loop.is_running():
                self.loop.close()

    def shutdown(self) -> None:
        """Stop :meth:`serve` (safe from a signal handler: it does not wait)."""
        threading.Thread(target=self.server.shutdown, daemon=True).start()


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    server_version = "nsmctl-dashboard"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no line per poll
        return

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/api/topology":
            try:
                body = self.dashboard.topology()
            except Exception as exc:  # the page shows it and polls again
                error = {"error": f"{type(exc).__name__}: {exc}"}
                self._send(503, json.dumps(error).encode(), "application/json")
                return
            self._send(200, body, "application/json")
        elif path in STATIC:
            name, content_type = STATIC[path]
            data = resources.files("nsmctl").joinpath("dashboard_static", name).read_bytes()
            self._send(200, data, content_type)
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    do_HEAD = do_GET


def dashboard(
    ctx: typer.Context,
    listen: Annotated[str, typer.Option(
        "--listen", metavar="HOST:PORT", callback=_listen, show_default=False,
        help=f"where to serve the page (default {DEFAULT_LISTEN}; port 0 picks a free "
             "one)")] = DEFAULT_LISTEN,
    nsmgr: graph_cmds.NsmgrsOpt = None,
    lab: graph_cmds.LabOpt = False,
) -> None:
    """Serve a live web page of the fabric: topology graph, connections with live counters,
    component health. Runs until Ctrl-C or SIGTERM."""
    opts = options(ctx)
    registry, nodes = graph_cmds.sources(ctx, lab, nsmgr)
    follow_lab = lab or any(node.name for node in nodes)  # the lab's nodes have names

    learned: dict[str, str] = {}  # nsmgr address → its name, seen in an earlier refresh

    async def gather() -> dict[str, Any]:
        found = graph_cmds.lab_sources() if follow_lab else None
        where, asked = found if found is not None else (registry, nodes)
        asked = [replace(n, nsmgr_name=learned.get(n.nsmgr, "")) for n in asked]
        topo = await graph.topology(where, asked, opts.timeout)
        learned.update({n["nsmgr"]["url"]: n["nsmgr"]["name"] for n in topo["nodes"]
                        if n["nsmgr"]["name"]})
        return topo

    try:
        board = Dashboard(gather, listen, opts.timeout)
    except OSError as exc:
        raise CliError(f"cannot listen on {listen}: {exc.strerror or exc} (choose another "
                       "--listen HOST:PORT)") from None
    before = {sig: signal.signal(sig, lambda _s, _f: board.shutdown())
              for sig in (signal.SIGINT, signal.SIGTERM)}
    emit(f"serving the dashboard at {board.url} (Ctrl-C stops it)")
    try:
        board.serve()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    emit("dashboard stopped")


def register(app: typer.Typer) -> None:
    """Add ``dashboard`` to the root command."""
    app.command("dashboard", help=dashboard.__doc__)(dashboard)
