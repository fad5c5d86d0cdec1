"""Authorization policies as data: who may request, and who may register, which network service.

A policy file is YAML::

    requests:                      # who may Request which network service
      - rule: web-to-db            # a name, quoted in logs and decisions
        services: [secure-db]      # globs over service names
        clients:                   # globs over SPIFFE IDs of the requesting client
          - spiffe://example.org/nsc/web-*
        labels: {app: web}         # optional: the request must carry these labels
    registrations:                 # which endpoint identities may register which services
      - rule: db-endpoints
        services: [secure-db]
        endpoints: [spiffe://example.org/nse/db-*]

Globs: ``*`` matches within one path segment (not ``/``), ``**`` matches anything, ``?`` one
character. Identities of federated trust domains are named like local ones, by their own trust
domain (``spiffe://cloud-b/nsc/web``: the client's ID as its own CA issued it). A ``clients`` or
``endpoints`` glob that starts with ``spiffe://`` names its trust domain literally (no ``*`` or
``?`` in it: a wildcard there would admit every federated trust domain at once); ``**`` alone
still means every identity of every trust domain this process trusts. A request rule needs
``clients`` or ``labels`` (labels are what the client claims, so
pair them with ``clients`` where it matters). A caller without a SPIFFE ID matches no ``clients``
or ``endpoints`` glob.

Contract: :func:`parse_policy` raises :class:`sdk.errors.InvalidArgument` naming the path of the
bad entry (``requests[0].services``). With a policy, everything no rule allows is denied; the
first allowing rule wins. :meth:`Policy.explain` / :meth:`Policy.explain_registration` return a
:class:`Decision` with the rule and a reason naming the identities. :class:`PolicyFile` re-reads
its file when it changes (checked on use, at most every ``poll`` seconds); a broken new version is
logged and the previous policy stays in force. :data:`ALLOW_ALL` is the policy without a file.

Without a file nothing is authorized at all, so :func:`load_policy` says so loudly at start (a
warning whose event begins with "AUTHORIZATION IS OFF", with the fix), and
:func:`authorization_state` gives the one line ``nsmctl check`` shows for a node. A process can
publish whether it enforces a policy as the gRPC health of service :data:`AUTHORIZATION_HEALTH`
(SERVING: a policy file is in force; NOT_SERVING: allow-all), which ``nsmctl check`` asks first.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import structlog

from sdk.errors import InvalidArgument
from sdk.security.spiffe import SCHEME, check_trust_domain

_log = structlog.get_logger("sdk.security.policy")

MAX_FILE = 1 << 20
MAX_RULES = 1000
MAX_GLOBS = 256
MAX_GLOB = 2048
MAX_LABELS = 64


@cache
def _glob_regex(glob: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def glob_match(glob: str, text: str) -> bool:
    """Whether ``text`` matches ``glob`` (``*`` within a segment, ``**`` across, ``?``)."""
    return _glob_regex(glob).fullmatch(text) is not None


def _any(globs: Sequence[str], text: str | None) -> bool:
    return text is not None and any(glob_match(g, text) for g in globs)


@dataclass(frozen=True)
class Decision:
    """The outcome of a check: allowed or not, the deciding rule (None: no rule), why."""

    allowed: bool
    rule: str | None
    reason: str


@dataclass(frozen=True)
class RequestRule:
    rule: str
    services: tuple[str, ...]
    clients: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def misses(self, client: str | None, labels: Mapping[str, str]) -> str | None:
        """Why this rule does not cover the caller (None: it does)."""
        if self.clients and not _any(self.clients, client):
            return f"rule {self.rule!r} covers the service but not client {client or '(anonymous)'}"
        for key, value in self.labels.items():
            if labels.get(key) != value:
                return f"rule {self.rule!r} needs label {key}={value}"
        return None


@dataclass(frozen=True)
class RegistrationRule:
    rule: str
    services: tuple[str, ...]
    endpoints: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    """A parsed policy; see the module docstring."""

    requests: tuple[RequestRule, ...] = ()
    registrations: tuple[RegistrationRule, ...] = ()
    enforcing: bool = True

    def explain(
        self, client_id: str | None, service: str, labels: Mapping[str, str] | None = None
    ) -> Decision:
        """May ``client_id`` (None: anonymous) request ``service`` with ``labels``?"""
        who = client_id or "(anonymous)"
        if not self.enforcing:
            return Decision(True, None, "no policy file: every service is allowed to everyone")
        labels = labels or {}
        near: list[str] = []
        for rule in self.requests:
            if not _any(rule.services, service):
                continue
            miss = rule.misses(client_id, labels)
            if miss is None:
                return Decision(True, rule.rule,
                                f"rule {rule.rule!r} allows {who} to request {service!r}")
            near.append(miss)
        hint = f" ({'; '.join(near[:3])})" if near else " (no rule names this service)"
        return Decision(False, None, f"no rule allows {who} to request {service!r}{hint}")

    def explain_registration(self, endpoint_id: str | None, service: str) -> Decision:
        """May ``endpoint_id`` (None: anonymous) register (an endpoint for) ``service``?"""
        who = endpoint_id or "(anonymous)"
        if not self.enforcing:
            return Decision(True, None, "no policy file: every registration is allowed")
        near: list[str] = []
        for rule in self.registrations:
            if not _any(rule.services, service):
                continue
            if _any(rule.endpoints, endpoint_id):
                return Decision(True, rule.rule,
                                f"rule {rule.rule!r} allows {who} to register {service!r}")
            near.append(rule.rule)
        hint = (f" (rules {', '.join(map(repr, near[:3]))} cover the service, not this endpoint)"
                if near else " (no registration rule names this service)")
        return Decision(False, None, f"no rule allows {who} to register {service!r}{hint}")


ALLOW_ALL = Policy(enforcing=False)


def _strings(value: Any, where: str, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or (required and not value):
        raise InvalidArgument(where, "must be a non-empty list of glob strings")
    if len(value) > MAX_GLOBS:
        raise InvalidArgument(where, f"at most {MAX_GLOBS} entries (got {len(value)})")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise InvalidArgument(f"{where}[{i}]", "must be a non-empty string")
        if len(item) > MAX_GLOB:
            raise InvalidArgument(f"{where}[{i}]", f"must be at most {MAX_GLOB} characters")
    return tuple(value)


def _identities(value: Any, where: str, required: bool) -> tuple[str, ...]:
    """Globs over SPIFFE IDs: a ``spiffe://`` glob names its trust domain literally."""
    globs = _strings(value, where, required)
    for i, glob in enumerate(globs):
        if not glob.startswith(SCHEME):
            continue
        domain = glob[len(SCHEME):].partition("/")[0]
        if any(c in domain for c in "*?"):
            raise InvalidArgument(
                f"{where}[{i}]",
                f"{glob!r} leaves the trust domain open: name it (spiffe://example.org/..., or "
                "a federated one such as spiffe://cloud-b/...), or use '**' for every identity "
                "of every trusted trust domain",
            )
        check_trust_domain(domain, f"{where}[{i}]")
    return globs


def _labels(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_LABELS:
        raise InvalidArgument(where, f"must be a map of at most {MAX_LABELS} label: value pairs")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str | int | float | bool):
            raise InvalidArgument(f"{where}[{key!r}]", "labels are strings: key: value")
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}


def _rules(value: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(where, "must be a list of rules")
    if len(value) > MAX_RULES:
        raise InvalidArgument(where, f"at most {MAX_RULES} rules (got {len(value)})")
    out = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise InvalidArgument(at, "a rule is a map with rule, services, ...")
        name = item.get("rule", f"{where}[{i}]")
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"{at}.rule", "must be a non-empty string")
        out.append((at, item))
    return out


def _only(item: Mapping[str, Any], allowed: set[str], at: str) -> None:
    unknown = sorted(str(k) for k in item if k not in allowed)
    if unknown:
        raise InvalidArgument(at, f"unknown key(s) {unknown}: use {sorted(allowed)}")


def parse_policy(text: str, source: str = "policy") -> Policy:
    """Parse policy YAML; see the module docstring for the format and errors."""
    if len(text) > MAX_FILE:
        raise InvalidArgument(source, f"must be at most {MAX_FILE} bytes")
    import yaml  # only when a policy is read: ~0.9 MB resident in every server otherwise

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidArgument(source, f"is not valid YAML{where}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise InvalidArgument(source, "must be a map with 'requests' and/or 'registrations'")
    _only(doc, {"version", "requests", "registrations"}, source)
    if doc.get("version", 1) != 1:
        raise InvalidArgument(f"{source}.version", "only version 1 is known")
    requests = []
    for at, item in _rules(doc.get("requests"), "requests"):
        _only(item, {"rule", "services", "clients", "labels"}, at)
        rule = RequestRule(
            rule=item.get("rule", at),
            services=_strings(item.get("services"), f"{at}.services", True),
            clients=_identities(item.get("clients"), f"{at}.clients", False),
            labels=_labels(item.get("labels"), f"{at}.labels"),
        )
        if not rule.clients and not rule.labels:
            raise InvalidArgument(
                at, "needs 'clients' or 'labels' (use clients: ['**'] to allow every identity)"
            )
        requests.append(rule)
    registrations = []
    for at, item in _rules(doc.get("registrations"), "registrations"):
        _only(item, {"rule", "services", "endpoints"}, at)
        registrations.append(RegistrationRule(
            rule=item.get("rule", at),
            services=_strings(item.get("services"), f"{at}.services", True),
            endpoints=_identities(item.get("endpoints"), f"{at}.endpoints", True),
        ))
    return Policy(tuple(requests), tuple(registrations))


class PolicySource(Protocol):
    """Something that yields the policy in force now."""

    def policy(self) -> Policy: ...


class StaticPolicy:
    """A fixed policy (tests, or :data:`ALLOW_ALL`)."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    def policy(self) -> Policy:
        return self._policy


class PolicyFile:
    """A policy file, re-read when it changes; see the module docstring."""

    def __init__(
        self, path: Path, poll: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.poll = poll
        self._clock = clock
        self._lock = threading.Lock()
        self._checked = clock()
        self._stamp = self._stat()
        self._policy = parse_policy(self._read(), str(path))
        _log.info("policy loaded", path=str(path), requests=len(self._policy.requests),
                  registrations=len(self._policy.registrations))

    def _stat(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise InvalidArgument(str(self.path), f"cannot be read ({exc.strerror})") from None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _read(self) -> str:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise InvalidArgument(str(self.path), f"cannot be read ({exc.strerror})") from None
        if len(data) > MAX_FILE:
            raise InvalidArgument(str(self.path), f"must be at most {MAX_FILE} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument(str(self.path), "must be UTF-8 text") from None

    def policy(self) -> Policy:
        with self._lock:
            now = self._clock()
            if now - self._checked >= self.poll:
                self._checked = now
                self._maybe_reload()
            return self._policy

    def reload(self) -> None:
        """Check the file now (tests, SIGHUP handlers)."""
        with self._lock:
            self._maybe_reload()

    def _maybe_reload(self) -> None:
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return
            self._stamp = stamp
            self._policy = parse_policy(self._read(), str(self.path))
        except InvalidArgument as exc:
            _log.error("policy reload failed, keeping the previous policy", path=str(self.path),
                       error=str(exc))
            return
        _log.info("policy reloaded", path=str(self.path), requests=len(self._policy.requests),
                  registrations=len(self._policy.registrations))


#: gRPC health service name under which a process reports whether it enforces a policy.
AUTHORIZATION_HEALTH = "vwire.authorization"

ALLOW_ALL_EFFECT = (
    "every client may request every network service and every endpoint may register every "
    "service"
)
ALLOW_ALL_WARNING = f"AUTHORIZATION IS OFF: no policy file, so {ALLOW_ALL_EFFECT}"
POLICY_FIX = (
    "write a policy (example: docs/examples/policy.yaml) and start nsmgr and the registry "
    "with --policy FILE"
)


def enforcing(source: PolicySource) -> bool:
    """Whether ``source`` enforces a policy (False: allow-all, no file)."""
    return source.policy().enforcing


def load_policy(path: Path | str | None, poll: float = 1.0) -> PolicySource:
    """The policy source for a process: the file, or allow-all (said loudly in the log)."""
    if not path:
        _log.warning(ALLOW_ALL_WARNING, authorization="off", fix=POLICY_FIX)
        return StaticPolicy(ALLOW_ALL)
    return PolicyFile(Path(path), poll)


def authorization_state(path: str | None) -> tuple[bool | None, str]:
    """What ``nsmctl check`` says about policy file ``path`` (None: none configured):
    (True: enforced, None: off — allow all, False: the file is broken; the line to show)."""
    if not path:
        return None, f"no policy file, so {ALLOW_ALL_EFFECT}; {POLICY_FIX}"
    try:
        file = Path(path)
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise InvalidArgument(path, f"cannot be read ({exc.strerror})") from None
        if len(data) > MAX_FILE:
            raise InvalidArgument(path, f"must be at most {MAX_FILE} bytes")
        try:
            policy = parse_policy(data.decode("utf-8"), path)
        except UnicodeDecodeError:
            raise InvalidArgument(path, "must be UTF-8 text") from None
    except InvalidArgument as exc:
        return False, f"policy file {exc}: fix it (nsmctl policy check --policy {path} ...)"
    return True, (
        f"{path}: {len(policy.requests)} request and {len(policy.registrations)} registration "
        "rules; everything else is denied"
    )
