"""sdk.select.match: NSM match semantics, label templates, fallthrough, weights."""

from __future__ import annotations

from api.proto.registry_pb2 import (
    Destination,
    Match,
    NetworkService,
    NetworkServiceEndpoint,
    NetworkServiceLabels,
)
from sdk.select import WeightedCandidate, candidates
from sdk.select.match import expand

SERVICE = "secure-db"


def nse(name: str, service: str = SERVICE, **labels: str) -> NetworkServiceEndpoint:
    return NetworkServiceEndpoint(
        name=name,
        network_service_names=[service],
        network_service_labels={service: NetworkServiceLabels(labels=labels)},
    )


def route(weight: int = 0, **selector: str) -> Destination:
    return Destination(destination_selector=selector, weight=weight)


def service(*matches: Match) -> NetworkService:
    return NetworkService(name=SERVICE, matches=list(matches))


def picked(result: list[WeightedCandidate]) -> list[tuple[str, int]]:
    return [(c.name, c.weight) for c in result]


ENDPOINTS = [
    nse("a", app="web", zone="east"),
    nse("b", app="db", zone="west"),
    nse("c", app="db", zone="east"),
]


def test_no_matches_every_endpoint_of_the_service_weight_1() -> None:
    other = NetworkServiceEndpoint(name="x", network_service_names=["other"])
    result = candidates(service(), [*ENDPOINTS, other], {"app": "web"})
    assert picked(result) == [("a", 1), ("b", 1), ("c", 1)]


def test_first_applying_match_selects_by_destination_selector() -> None:
    svc = service(
        Match(source_selector={"app": "web"}, routes=[route(app="db")]),
        Match(routes=[route(app="web")]),
    )
    assert picked(candidates(svc, ENDPOINTS, {"app": "web", "x": "y"})) == [("b", 1), ("c", 1)]
    # source selector not a subset of the client's labels -> next match
    assert picked(candidates(svc, ENDPOINTS, {"app": "other"})) == [("a", 1)]


def test_empty_source_selector_always_applies_and_empty_destination_selects_all() -> None:
    svc = service(Match(routes=[route()]))
    assert [c.name for c in candidates(svc, ENDPOINTS, {})] == ["a", "b", "c"]


def test_labels_are_those_for_this_service_only() -> None:
    odd = NetworkServiceEndpoint(
        name="odd",
        network_service_names=[SERVICE, "other"],
        network_service_labels={"other": NetworkServiceLabels(labels={"app": "db"})},
    )
    svc = service(Match(routes=[route(app="db")]))
    assert [c.name for c in candidates(svc, [odd, *ENDPOINTS], {})] == ["b", "c"]


def test_templates_are_replaced_with_client_labels() -> None:
    svc = service(Match(routes=[route(zone="{{ .zone }}")]))
    assert [c.name for c in candidates(svc, ENDPOINTS, {"zone": "east"})] == ["a", "c"]
    compact = service(Match(routes=[route(zone="{{.zone}}")]))
    assert [c.name for c in candidates(compact, ENDPOINTS, {"zone": "west"})] == ["b"]


def test_template_with_missing_client_label_selects_nothing() -> None:
    svc = service(Match(routes=[route(zone="{{ .zone }}"), route(app="web")]))
    assert [c.name for c in candidates(svc, ENDPOINTS, {})] == ["a"]  # only the other route


def test_expand_embedded_and_malformed_templates() -> None:
    labels = {"zone": "east", "app": "db"}
    assert expand("{{ .app }}-{{.zone}}", labels) == "db-east"
    assert expand("plain", labels) == "plain"
    assert expand("{{ app }}", labels) == "{{ app }}"  # not a field reference: kept literally
    assert expand("{{ .nope }}", labels) is None


def test_templates_in_source_selector() -> None:
    svc = service(Match(source_selector={"app": "{{ .app }}"}, routes=[route(app="db")]))
    assert [c.name for c in candidates(svc, ENDPOINTS, {"app": "x"})] == ["b", "c"]
    # without the label the match does not apply; matches run out -> everyone (NSM)
    assert [c.name for c in candidates(svc, ENDPOINTS, {})] == ["a", "b", "c"]


def test_applying_match_without_fallthrough_that_selects_nothing_gives_empty() -> None:
    svc = service(
        Match(routes=[route(app="cache")], fallthrough=False),
        Match(routes=[route(app="web")]),
    )
    assert candidates(svc, ENDPOINTS, {}) == []


def test_fallthrough_continues_with_next_match() -> None:
    svc = service(
        Match(routes=[route(app="cache")], fallthrough=True),
        Match(routes=[route(app="web")]),
    )
    assert [c.name for c in candidates(svc, ENDPOINTS, {})] == ["a"]


def test_matches_running_out_gives_every_endpoint_like_nsm() -> None:
    none_apply = service(Match(source_selector={"app": "web"}, routes=[route(app="db")]))
    assert len(candidates(none_apply, ENDPOINTS, {"app": "db"})) == 3
    all_fall = service(Match(routes=[route(app="cache")], fallthrough=True))
    assert [(c.name, c.weight) for c in candidates(all_fall, ENDPOINTS, {})] == [
        ("a", 1),
        ("b", 1),
        ("c", 1),
    ]


def test_weights_zero_counts_as_one_and_highest_wins() -> None:
    svc = service(
        Match(
            routes=[
                route(weight=0, app="db"),
                route(weight=90, zone="east"),
                route(weight=10, zone="east"),
            ]
        )
    )
    assert picked(candidates(svc, ENDPOINTS, {})) == [("b", 1), ("c", 90), ("a", 90)]


def test_no_endpoints_and_duplicate_records() -> None:
    assert candidates(service(), [], {}) == []
    first, second = nse("a", app="web"), nse("a", app="db")
    result = candidates(service(Match(routes=[route(app="db")])), [first, second], {})
    assert result == []  # the first record of a name wins
