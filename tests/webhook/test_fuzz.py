"""The webhook answers every AdmissionReview — arbitrary JSON and reviews with any part replaced
by any JSON value — with a well-formed response, never raising and never an internal error."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.webhook import reviews
from webhook.inject import InjectConfig
from webhook.namespaces import Namespace
from webhook.review import review

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=20,
)
BASES = [
    reviews.pod(annotation="kernel://a/nsm0", name="web"),
    reviews.pod(namespace="meshed", generate_name="web-"),
    reviews.workload("Deployment", template_annotation="kernel://a"),
    reviews.workload("Job", annotation="kernel://a,kernel://b"),
]


def lookup(name: str) -> Namespace | None:
    return Namespace(name, {"networkservicemesh.io": "kernel://ns-wide"})


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += paths(value, (*prefix, index))
    return found


def check(answer: dict[str, Any]) -> None:
    response = answer["response"]
    assert isinstance(response["uid"], str) and isinstance(response["allowed"], bool)
    if not response["allowed"]:
        assert "internal error" not in response["status"]["message"], response


@given(JSON)
def test_any_json_body(body: Any) -> None:
    check(review(body, InjectConfig(), lookup))


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.sampled_from(BASES), st.data(), JSON)
def test_any_part_of_a_review_replaced(base: dict[str, Any], data: st.DataObject,
                                       value: Any) -> None:
    doc = copy.deepcopy(base)
    path = data.draw(st.sampled_from(paths(doc)[1:]))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    check(review(doc, InjectConfig(), lookup))
