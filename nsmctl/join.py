"""A VM (or any host outside Kubernetes) as a node of a domain: its nsmgr and forwarder as
systemd units, or as supervised processes where systemd does not run.

What :func:`install` writes under ``root`` (``/`` on a real VM; a test directory otherwise):

* ``etc/vwire/node.env``: the EnvironmentFile with the node's settings (``VWIRE_NSMGR_*`` and
  ``VWIRE_FORWARDER_*``: names ``nsmgr-NODE``/``forwarder-NODE``, the registry, sockets under
  ``var/run/vwire``, the SVID directories, the underlay interface, and any other setting of
  either process given as ``--setting VARIABLE=VALUE``, e.g. the nsmgr's domain and gateway or
  the forwarder's site and NAT);
* ``etc/vwire/identity/{nsmgr,forwarder}``: the node's SVIDs (keys mode 0600);
* ``etc/systemd/system/vwire-nsmgr.service`` and ``vwire-forwarder.service`` (the forwarder
  binds to nsmgr); with ``netns`` each has ``NetworkNamespacePath=`` (the lab's simulated VM);
* ``etc/vwire/installed.json``: every file and directory made, so :func:`uninstall` removes
  exactly those.

With ``role="gateway"`` (a :class:`~nsmctl.join_domain.DomainPlan`) the node also serves its
domain (:mod:`nsmctl.join_domain`): the CA is made on the node when ``--ca-dir`` holds none, the
SVIDs of ``identity/{registry,gateway,nsmgr,forwarder}`` are issued from it instead of copied,
and four more units come first (CA agent, registry, gateway, join signer); the registry's SQLite
store lives in ``var/lib/vwire``. Leaving keeps the CA (and the tokens it holds) unless
``purge_ca`` is given and join made it.

The same unit and env files drive both modes: **systemd** (``systemctl daemon-reload``,
``enable --now``; chosen when systemd is PID 1 and ``root`` is ``/``) and **supervisor**
(:func:`start`: each unit's ``ExecStart`` as a detached process with the env file's variables,
inside ``NetworkNamespacePath`` via ``nsenter --net``, pid files in ``var/run/vwire``, logs in
``var/log/vwire``). :func:`stop` ends what the pid files name, after checking each pid still
runs that unit's command (a recycled pid is never signalled).

Bad input raises :class:`sdk.errors.InvalidArgument` naming the option before anything is
written; a failure while installing or starting removes what was made.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from forwarder.settings import PREFIX as FORWARDER
from forwarder.settings import ForwarderSettings
from nsmctl import join_domain
from nsmctl.join_domain import DomainPlan
from nsmgr.settings import PREFIX as NSMGR
from nsmgr.settings import NsmgrSettings
from sdk.errors import FabricError, FailedPrecondition, InvalidArgument
from sdk.grpcutil import parse_address, unix_socket_accepts
from sdk.security.ca import CertificateAuthority
from sdk.security.source import FileSvidSource
from sdk.security.svid import BUNDLE_FILE, CERT_FILE, KEY_FILE
from sdk.settings import describe

UNITS = ("vwire-nsmgr.service", "vwire-forwarder.service")  # start order
RENEW_UNIT = "vwire-renew.service"  # with a join signer: keeps the node's SVIDs renewed
SOCKETS = {"vwire-nsmgr.service": "nsmgr.sock", "vwire-forwarder.service": "forwarder.sock",
           **join_domain.SOCKETS}
ALL_UNITS = (*join_domain.UNITS, *UNITS, RENEW_UNIT)  # start order of every unit join may make
MODES = ("auto", "systemd", "supervisor")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


@dataclass(frozen=True)
class JoinPlan:
    """Everything ``nsmctl node join`` was asked for."""

    name: str
    registry: str
    identity: Path  # holds nsmgr/ and forwarder/ SVID directories (nsmctl ca issue --out)
    root: Path = Path("/")
    python: str = "/usr/bin/python3"
    advertise: str = ""  # tcp://IP:PORT remote nsmgrs reach this one at ('' = local only)
    underlay_interface: str = "eth0"
    netns: str = ""  # run both in this named network namespace (lab)
    log_level: str = "info"
    #: more settings of either process (``VWIRE_NSMGR_DOMAIN``, ``VWIRE_FORWARDER_SITE``, ...)
    settings: tuple[tuple[str, str], ...] = ()
    signer: str = ""  # the join signer: a third unit renews the SVIDs from it
    role: str = "node"  # or "gateway": with ``domain``, the node serves its domain too
    domain: DomainPlan | None = None


@dataclass(frozen=True)
class Layout:
    """Where a node's files live under ``root``."""

    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc/vwire"

    @property
    def env_file(self) -> Path:
        return self.etc / "node.env"

    @property
    def identity(self) -> Path:
        return self.etc / "identity"

    @property
    def manifest(self) -> Path:
        return self.etc / "installed.json"

    @property
    def units(self) -> Path:
        return self.root / "etc/systemd/system"

    @property
    def state(self) -> Path:
        return self.root / "var/lib/vwire"

    @property
    def run(self) -> Path:
        return self.root / "var/run/vwire"

    @property
    def logs(self) -> Path:
        return self.root / "var/log/vwire"

    def pid_file(self, unit: str) -> Path:
        return self.run / f"{unit}.pid"


def systemd_running() -> bool:
    """Whether systemd is this machine's init (what ``sd_booted()`` checks)."""
    return Path("/run/systemd/system").is_dir()


def choose_mode(mode: str, root: Path) -> str:
    """``systemd`` or ``supervisor`` for ``mode`` (``auto`` picks)."""
    if mode not in MODES:
        raise InvalidArgument("--mode", f"{mode!r}: use one of {', '.join(MODES)}")
    if mode == "systemd" and not systemd_running():
        raise InvalidArgument("--mode", "systemd is not running on this host (PID 1 is not "
                              "systemd): use --mode supervisor")
    if mode == "auto":
        return "systemd" if systemd_running() and root == Path("/") else "supervisor"
    return mode


def _svid_kind(directory: Path, kind: str) -> None:
    for file in (CERT_FILE, KEY_FILE, BUNDLE_FILE):
        if not (directory / file).is_file():
            raise InvalidArgument("--identity", f"{directory / file} is missing: make it with "
                                  f"'nsmctl ca issue --spiffe-id spiffe://TD/{kind}/{kind}-NODE "
                                  f"--out {directory}'")
    try:
        spiffe = FileSvidSource(directory).current().spiffe_id
    except FabricError as exc:
        raise InvalidArgument("--identity", f"{directory}: {exc}") from None
    if not spiffe.path.startswith(f"/{kind}/"):
        raise InvalidArgument("--identity", f"{directory} holds {spiffe}, not a {kind} identity "
                              f"(spiffe://TD/{kind}/...)")


def validate(plan: JoinPlan, identity: bool = True) -> None:
    """Raise InvalidArgument naming the first bad option (the SVIDs too, with ``identity``)."""
    if not _NAME.match(plan.name):
        raise InvalidArgument("--name", f"{plan.name[:60]!r}: use at most 42 lower-case letters, "
                              "digits and '-', starting and ending with a letter or digit")
    parse_address(plan.registry, "--registry")
    if plan.advertise and parse_address(plan.advertise, "--advertise").scheme != "tcp":
        raise InvalidArgument("--advertise", "must be tcp://IP:PORT")
    if not _IFNAME.match(plan.underlay_interface):
        raise InvalidArgument("--underlay-interface", "must be an interface name such as eth0")
    if plan.netns and not Path(f"/var/run/netns/{plan.netns}").exists():
        raise InvalidArgument("--netns", f"{plan.netns!r} is not in 'ip netns list'")
    if not plan.root.is_absolute():
        raise InvalidArgument("--root", "must be an absolute path")
    if plan.role not in join_domain.ROLES:
        raise InvalidArgument("--role", f"{plan.role[:40]!r}: use one of "
                              f"{', '.join(join_domain.ROLES)}")
    if plan.role == "gateway" and plan.domain is None:
        raise InvalidArgument("--domain", "a gateway node serves a domain: give --domain NAME")
    if plan.role != "gateway" and plan.domain is not None:
        raise InvalidArgument("--role", "only a gateway node serves a domain (--role gateway)")
    for kind in ("nsmgr", "forwarder"):
        if identity and plan.domain is None:
            _svid_kind(plan.identity / kind, kind)


#: Variables join sets itself (a --setting may not contradict them).
OWN = ("NAME", "LISTEN", "REGISTRY", "SVID_DIR", "LOG_LEVEL", "NSMGR", "UNDERLAY_INTERFACE")


def known_settings() -> set[str]:
    """Every variable of nsmgr's and the forwarder's settings that join does not set itself."""
    found = set()
    for cls, prefix in ((NsmgrSettings, NSMGR), (ForwarderSettings, FORWARDER)):
        found |= {variable for variable, _, _ in describe(cls, prefix)
                  if variable.removeprefix(prefix) not in OWN}
    return found


def parse_settings(pairs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``VWIRE_..=VALUE`` strings, each a known setting (InvalidArgument naming --setting)."""
    known = known_settings()
    found = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in known:
            raise InvalidArgument("--setting", f"{pair[:80]!r}: use VARIABLE=VALUE with one of "
                                  "the nsmgr's or forwarder's settings in the README (not one "
                                  "join sets itself)")
        if "\n" in value or "\0" in value:
            raise InvalidArgument("--setting", f"{name}: the value must be one line")
        found.append((name, value))
    return tuple(found)


def environment(plan: JoinPlan) -> dict[str, str]:
    """The EnvironmentFile's variables."""
    where = Layout(plan.root)
    nsmgr_socket = f"unix://{where.run / 'nsmgr.sock'}"
    listen = [nsmgr_socket] + ([plan.advertise] if plan.advertise else [])
    domain = (join_domain.environment(plan.domain, where.run, where.identity, where.state,
                                      plan.log_level) if plan.domain else {})
    registry = (f"unix://{where.run / join_domain.SOCKETS[join_domain.REGISTRY]}"
                if plan.domain else plan.registry)
    return {
        **domain,
        "VWIRE_NSMGR_NAME": f"nsmgr-{plan.name}",
        "VWIRE_NSMGR_LISTEN": ",".join(listen),
        "VWIRE_NSMGR_REGISTRY": registry,
        "VWIRE_NSMGR_SVID_DIR": str(where.identity / "nsmgr"),
        "VWIRE_NSMGR_LOG_LEVEL": plan.log_level,
        "VWIRE_FORWARDER_NAME": f"forwarder-{plan.name}",
        "VWIRE_FORWARDER_LISTEN": f"unix://{where.run / 'forwarder.sock'}",
        "VWIRE_FORWARDER_NSMGR": nsmgr_socket,
        "VWIRE_FORWARDER_UNDERLAY_INTERFACE": plan.underlay_interface,
        "VWIRE_FORWARDER_SVID_DIR": str(where.identity / "forwarder"),
        "VWIRE_FORWARDER_LOG_LEVEL": plan.log_level,
        **dict(plan.settings),
    }


def render_env(env: Mapping[str, str]) -> str:
    """An EnvironmentFile (systemd's syntax: KEY=value, values quoted)."""
    lines = ["# written by nsmctl node join; removed by nsmctl node leave"]
    lines += [f"{key}={shlex.quote(value)}" for key, value in env.items()]
    return "\n".join(lines) + "\n"


def parse_env(text: str) -> dict[str, str]:
    """The variables of an EnvironmentFile written by :func:`render_env`."""
    found = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = " ".join(shlex.split(value))
    return found


def render_units(plan: JoinPlan) -> dict[str, str]:
    """The unit files by name, in start order."""
    where = Layout(plan.root)
    netns = (f"NetworkNamespacePath=/var/run/netns/{plan.netns}\n" if plan.netns else "")
    common = (f"EnvironmentFile={where.env_file}\n{netns}Restart=on-failure\nRestartSec=2\n"
              "KillMode=mixed\nTimeoutStopSec=15\n")
    units = (join_domain.render_units(plan.domain, plan.python, where.identity, common)
             if plan.domain else {})
    after = " ".join(["network-online.target", *units])  # a gateway node: its domain first
    units |= {
        "vwire-nsmgr.service": (
            "[Unit]\nDescription=vWire node manager (nsmgr)\n"
            f"Wants=network-online.target\nAfter={after}\n\n"
            f"[Service]\nType=exec\nExecStart={plan.python} -m nsmgr\n{common}\n"
            "[Install]\nWantedBy=multi-user.target\n"),
        "vwire-forwarder.service": (
            "[Unit]\nDescription=vWire forwarder\n"
            "BindsTo=vwire-nsmgr.service\nAfter=vwire-nsmgr.service\n\n"
            f"[Service]\nType=exec\nExecStart={plan.python} -m forwarder\n{common}\n"
            "[Install]\nWantedBy=multi-user.target\n"),
    }
    if plan.signer:
        units[RENEW_UNIT] = (
            "[Unit]\nDescription=vWire node SVID renewal\n"
            "Wants=network-online.target\nAfter=network-online.target\n\n"
            f"[Service]\nType=exec\nExecStart={plan.python} -m nsmctl node renew "
            f"--signer {plan.signer} --root {plan.root}\nEnvironmentFile={where.env_file}\n"
            "Restart=always\nRestartSec=30\n\n[Install]\nWantedBy=multi-user.target\n")
    return units


def installed_units(root: Path) -> list[str]:
    """The units join installed under ``root``, in start order."""
    return [unit for unit in ALL_UNITS if (Layout(root).units / unit).exists()]


@dataclass(frozen=True)
class UnitSpec:
    """What the supervisor takes from a unit file."""

    exec_start: list[str]
    env_file: Path
    netns_path: str


def parse_unit(text: str, name: str) -> UnitSpec:
    """The ExecStart, EnvironmentFile and NetworkNamespacePath of a unit file."""
    values: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif "=" in line and not line.startswith(("#", ";")) and section == "[Service]":
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    if "ExecStart" not in values or "EnvironmentFile" not in values:
        raise FailedPrecondition(f"{name}: no ExecStart or EnvironmentFile in [Service]")
    return UnitSpec(shlex.split(values["ExecStart"]), Path(values["EnvironmentFile"]),
                    values.get("NetworkNamespacePath", ""))


# -- install / uninstall ------------------------------------------------------------------------


def _write(path: Path, text: str, made: list[str], mode: int = 0o644) -> None:
    _mkdirs(path.parent, made)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    made.append(str(path))


def _mkdirs(directory: Path, made: list[str]) -> None:
    missing = []
    for parent in [directory, *directory.parents]:
        if parent.exists():
            break
        missing.append(parent)
    for parent in reversed(missing):
        parent.mkdir(mode=0o755)
        made.append(str(parent) + "/")


def install(plan: JoinPlan) -> list[str]:
    """Write the node's files (see the module docstring); returns what was made. Refuses a root
    where a node is installed already."""
    validate(plan)
    where = Layout(plan.root)
    if where.manifest.exists():
        raise FailedPrecondition(f"a node is installed under {plan.root} already "
                                 "(run 'nsmctl node leave' first)")
    made: list[str] = []
    ca_made = False
    try:
        if plan.domain is None:
            _copy_identity(plan.identity, where.identity, made)
        else:
            _mkdirs(plan.domain.ca_dir.parent, made)
            ca, ca_made = join_domain.ensure_ca(plan.domain)
            _issue_identity(ca, plan.domain, plan.name, where.identity, made)
            _mkdirs(where.state, made)
        _write(where.env_file, render_env(environment(plan)), made, 0o600)
        for unit, text in render_units(plan).items():
            _write(where.units / unit, text, made)
        _mkdirs(where.run, made)
        _mkdirs(where.logs, made)
        record: dict[str, object] = {"node": plan.name, "role": plan.role, "made": made}
        if plan.domain is not None:
            record["ca"] = {"dir": str(plan.domain.ca_dir), "made": ca_made}
        _write(where.manifest, json.dumps(record, indent=1), made)
    except BaseException:
        if ca_made and plan.domain is not None:
            shutil.rmtree(plan.domain.ca_dir, ignore_errors=True)
        _remove(made)
        raise
    return made


def _copy_identity(source: Path, identity: Path, made: list[str]) -> None:
    for kind in ("nsmgr", "forwarder"):
        for file in (CERT_FILE, KEY_FILE, BUNDLE_FILE):
            _write(identity / kind / file, (source / kind / file).read_text(), made,
                   0o600 if file == KEY_FILE else 0o644)


def _issue_identity(ca: CertificateAuthority, domain: DomainPlan, node: str, identity: Path,
                    made: list[str]) -> None:
    """The gateway node's SVIDs, issued here; every file and directory recorded in ``made``."""
    for kind in join_domain.KINDS:
        _mkdirs(identity / kind, made)
    join_domain.issue_svids(ca, domain, node, identity)
    for kind in join_domain.KINDS:
        for path in sorted((identity / kind).rglob("*")):
            made.append(str(path) + ("/" if path.is_dir() else ""))


def _remove(made: list[str]) -> None:
    """Remove files, then directories (deepest first, only if empty: a file not ours stays)."""
    for entry in reversed(made):
        path = Path(entry.rstrip("/"))
        if entry.endswith("/"):
            with contextlib.suppress(OSError):
                path.rmdir()
        else:
            path.unlink(missing_ok=True)


def installed(root: Path) -> dict[str, object] | None:
    """The manifest of the node installed under ``root``, or None."""
    try:
        found: dict[str, object] = json.loads(Layout(root).manifest.read_text())
    except (OSError, ValueError):
        return None
    return found


def uninstall(root: Path, purge_ca: bool = False) -> list[str]:
    """Remove every file :func:`install` made under ``root`` (pid files, logs and the registry's
    store too). A gateway node's CA stays, unless ``purge_ca`` and join made it."""
    manifest = installed(root)
    if manifest is None:
        raise FailedPrecondition(f"no node is installed under {root} (no {Layout(root).manifest})")
    listed = manifest.get("made", [])
    made = [entry for entry in listed if isinstance(entry, str)] if isinstance(listed, list) else []
    where = Layout(root)
    for unit in ALL_UNITS:
        where.pid_file(unit).unlink(missing_ok=True)
        (where.logs / f"{unit}.log").unlink(missing_ok=True)
    for sock in SOCKETS.values():
        (where.run / sock).unlink(missing_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        (where.state / f"registry.db{suffix}").unlink(missing_ok=True)
    where.manifest.unlink()
    ca = manifest.get("ca")
    if purge_ca and isinstance(ca, dict) and ca.get("made") is True:
        shutil.rmtree(str(ca.get("dir")), ignore_errors=True)
    _remove(made)
    return made


def ca_kept(root: Path) -> str:
    """The CA directory a gateway node's leave keeps ('' when none): read before uninstall."""
    manifest = installed(root) or {}
    ca = manifest.get("ca")
    return str(ca.get("dir", "")) if isinstance(ca, dict) else ""


# -- systemd ------------------------------------------------------------------------------------


def systemctl(*args: str) -> None:
    done = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise FailedPrecondition(f"systemctl {' '.join(args)} failed: {done.stderr.strip()}")


# -- supervisor ---------------------------------------------------------------------------------


def _running(pid: int, unit_command: list[str]) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return all(arg.encode() in argv for arg in unit_command[1:])


def start(root: Path, timeout: float = 30.0) -> dict[str, int]:
    """Start every unit under ``root`` as a detached process (see the module docstring) and wait
    until each serves its socket; returns unit → pid. A failure stops what was started."""
    where = Layout(root)
    pids: dict[str, int] = {}
    try:
        for unit in installed_units(root):
            pids[unit] = _start_unit(where, unit)
            if unit in SOCKETS or unit in join_domain.READY_LINES:
                _wait_ready(where, unit, pids[unit], timeout)
    except BaseException:
        stop(root)
        raise
    return pids


def _start_unit(where: Layout, unit: str) -> int:
    spec = parse_unit((where.units / unit).read_text(), unit)
    env = {**os.environ, **parse_env(spec.env_file.read_text()), "PYTHONUNBUFFERED": "1"}
    prefix = ["nsenter", f"--net={spec.netns_path}"] if spec.netns_path else []
    with open(where.logs / f"{unit}.log", "ab") as log:
        process = subprocess.Popen(
            [*prefix, *spec.exec_start], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            env=env, start_new_session=True, cwd="/")
    where.pid_file(unit).write_text(str(process.pid))
    return process.pid


def _ready(where: Layout, unit: str) -> bool:
    """Whether ``unit`` serves: its unix socket accepts, or its log has its ready line."""
    if unit in SOCKETS:
        return unix_socket_accepts(where.run / SOCKETS[unit])
    try:
        return join_domain.READY_LINES[unit] in (where.logs / f"{unit}.log").read_text(
            errors="replace")
    except OSError:
        return False


def _wait_ready(where: Layout, unit: str, pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _ready(where, unit):
        gone = not Path(f"/proc/{pid}").exists() or _zombie(pid)
        if gone or time.monotonic() > deadline:
            tail = _tail(where.logs / f"{unit}.log")
            raise FailedPrecondition(f"{unit} did not start ({'exited' if gone else 'timed out'}):"
                                     f" {tail}")
        time.sleep(0.05)  # bounded poll of the daemon's own socket


def _zombie(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    return False


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1][-300:] if lines else "(empty log)"


def stop(root: Path, grace: float = 10.0) -> list[int]:
    """SIGTERM the units' processes (reverse order), SIGKILL after ``grace``; returns the pids
    stopped. Pid files are removed."""
    where = Layout(root)
    stopped = []
    for unit in reversed(installed_units(root)):
        pid_file = where.pid_file(unit)
        try:
            pid = int(pid_file.read_text())
            spec = parse_unit((where.units / unit).read_text(), unit)
        except (OSError, ValueError, FailedPrecondition):
            pid_file.unlink(missing_ok=True)
            continue
        if _running(pid, spec.exec_start):
            _terminate(pid, grace)
            stopped.append(pid)
        pid_file.unlink(missing_ok=True)
    return stopped


def _terminate(pid: int, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while Path(f"/proc/{pid}").exists() and not _zombie(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + grace
        time.sleep(0.05)  # bounded wait for the process to exit

