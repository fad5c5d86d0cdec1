"""Which endpoints may serve a client: NSM's NetworkService ``matches``, for L3.

:func:`candidates` implements NSM's match semantics (networkservicemesh/sdk ``matchEndpoint``),
exactly:

1. Only endpoints that list the service in ``network_service_names`` are considered (the first
   record wins when a name repeats). An endpoint's labels are its labels *for this service*,
   ``network_service_labels[service.name].labels`` (none → empty).
2. A service with no ``matches`` → every endpoint is a candidate, weight 1.
3. Otherwise the matches are tried in order. A match *applies* when its ``source_selector`` is a
   subset of the client's labels (an empty selector always applies); matches that do not apply
   are skipped.
4. In the first applying match, each route selects the endpoints whose labels contain its
   ``destination_selector`` (an empty selector selects every endpoint). Selector values are
   *label templates*: every ``{{ .key }}`` (spaces optional, as in Go templates) is replaced by
   the client's label ``key``; if the client has no such label the selector selects nothing.
   (Templates are expanded in ``source_selector`` values too, with the same rule, as NSM does.)
5. If the routes selected at least one endpoint, those are the candidates and the search stops.
   If they selected none: with ``fallthrough`` the search continues with the next match; without
   it the result is **empty** (the service has no endpoint for this client).
6. If the matches run out (none applied, or every applying one fell through), every endpoint is a
   candidate with weight 1 — NSM's behaviour, kept so the same NetworkService record means the
   same thing here as in NSM. Use a last match with an empty source selector and no fallthrough
   to make "no endpoint" the default instead.

Weights: each candidate carries its route's ``weight``; 0 (the proto default, i.e. "not set")
counts as 1. An endpoint selected by several routes of the applying match keeps the highest
weight. Candidates are ordered by first selection (route order, then endpoint order), so the
result is deterministic for a given input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint

#: ``{{ .key }}`` / ``{{.key}}``: a Go-template field reference to one client label.
_TEMPLATE = re.compile(r"\{\{\s*\.([^\s{}]+)\s*\}\}")


@dataclass(frozen=True, eq=False)
class WeightedCandidate:
    """An endpoint that may serve the client, with its relative weight (>= 1)."""

    endpoint: NetworkServiceEndpoint
    weight: int

    @property
    def name(self) -> str:
        """The endpoint's name."""
        return self.endpoint.name


def expand(value: str, client_labels: Mapping[str, str]) -> str | None:
    """``value`` with each ``{{ .key }}`` replaced by ``client_labels[key]``.

    None if a referenced label is missing (the selector containing it then selects nothing).
    Text that is not a well-formed reference is kept literally.
    """
    missing = False

    def substitute(found: re.Match[str]) -> str:
        nonlocal missing
        key = found.group(1)
        if key not in client_labels:
            missing = True
            return ""
        return client_labels[key]

    expanded = _TEMPLATE.sub(substitute, value)
    return None if missing else expanded


def selects(
    selector: Mapping[str, str], labels: Mapping[str, str], client_labels: Mapping[str, str]
) -> bool:
    """True if ``labels`` contain every ``selector`` entry, after template expansion."""
    for key, pattern in selector.items():
        wanted = expand(pattern, client_labels)
        if wanted is None or labels.get(key) != wanted:
            return False
    return True


def service_labels(endpoint: NetworkServiceEndpoint, service_name: str) -> Mapping[str, str]:
    """The labels ``endpoint`` declares for ``service_name`` (empty if none)."""
    if service_name in endpoint.network_service_labels:
        return endpoint.network_service_labels[service_name].labels
    return {}


def candidates(
    service: NetworkService,
    endpoints: Sequence[NetworkServiceEndpoint],
    client_labels: Mapping[str, str],
) -> list[WeightedCandidate]:
    """The endpoints that may serve a client with ``client_labels``; see the module docstring."""
    providers: dict[str, NetworkServiceEndpoint] = {}
    for endpoint in endpoints:
        if service.name in endpoint.network_service_names:
            providers.setdefault(endpoint.name, endpoint)
    everyone = [WeightedCandidate(endpoint, 1) for endpoint in providers.values()]
    for match in service.matches:
        if not selects(match.source_selector, client_labels, client_labels):
            continue
        weights: dict[str, int] = {}
        for route in match.routes:
            weight = max(route.weight, 1)
            for name, endpoint in providers.items():
                labels = service_labels(endpoint, service.name)
                if selects(route.destination_selector, labels, client_labels):
                    weights[name] = max(weights.get(name, 0), weight)
        if weights:
            return [WeightedCandidate(providers[name], weight) for name, weight in weights.items()]
        if not match.fallthrough:
            return []
    return everyone
