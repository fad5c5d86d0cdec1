"""Property-based hostile input for parsers of operator and peer input.

* ``nsmctl apply`` manifests (:func:`nsmctl.manifest.load`): any text, YAML of any shape, and
  near-miss records only ever give the validated records or a :class:`ManifestError` naming the
  manifest — never another exception (the CLI would print "a bug in nsmctl").
* ``nsmctl status`` rows (:func:`nsmctl.connections.summary`): connections whose path metrics
  and segment names hold any text (clients and forwarders write them) are always summarised
  and printed as they are (no rich markup is interpreted).

NSM URLs (``kernel://service@domain/ifname?labels``) are fuzzed in ``tests/unit/test_nsmurl.py``
(``test_arbitrary_text_only_ever_raises_invalid_argument``). Example counts: :data:`EXAMPLES`.
"""

from __future__ import annotations

import contextlib
import io
from datetime import datetime, timedelta, timezone
from typing import Any

import yaml
from google.protobuf import json_format
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from api.proto.connection_pb2 import Connection, PathSegment
from api.proto.registry_pb2 import NetworkService, NetworkServiceEndpoint
from nsmctl.connections import summary, table
from nsmctl.context import console
from nsmctl.manifest import Document, ManifestError, load
from sdk.registry.validate import validate_endpoint, validate_service

EXAMPLES = {"manifest_text": 400, "manifest_yaml": 500, "manifest_records": 300,
            "status_metrics": 200}
FUZZ = settings(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SOURCE = "fuzz.yaml"


def check_load(text: str) -> list[Document]:
    """The property: validated records, or a ManifestError naming the manifest."""
    try:
        documents = load(text, SOURCE)
    except ManifestError as exc:
        message = str(exc)
        assert message.startswith(f"{SOURCE}: ") and len(message) > len(SOURCE) + 2
        event("refused")
        return []
    event("accepted")
    assert documents
    for document in documents:
        if isinstance(document.record, NetworkService):
            validate_service(document.record)
        else:
            assert isinstance(document.record, NetworkServiceEndpoint)
            validate_endpoint(document.record)
    return documents


# --- any text ----------------------------------------------------------------------------------

YAMLISH = st.text(alphabet="kind: NetworkService\n-{}[]&*!|>'\"#%@`,?~0123456789.T+Z\t ",
                  max_size=200)


@settings(FUZZ, max_examples=EXAMPLES["manifest_text"])
@given(text=st.one_of(st.text(max_size=300), YAMLISH))
# PyYAML builds timestamps with datetime(), which refuses impossible dates with a ValueError
@example(text="kind: NetworkService\nname: a\nx: 2030-02-30\n")
@example(text="kind: NetworkServiceEndpoint\nname: e\nexpiration_time: 2030-02-30T00:00:00Z\n")
@example(text="- " * 2000 + "x")  # deep nesting
@example(text="a: &a [*a]")  # a recursive alias
@example(text="!!python/object/apply:os.system ['true']")
@example(text="kind: NetworkService\nname: a\npayload: !!binary aGk=\n")
def test_any_text_gives_records_or_a_manifest_error(text: str) -> None:
    check_load(text)


# --- any YAML shape with the manifest's own words ----------------------------------------------

KEYS = ["kind", "name", "metadata", "spec", "apiVersion", "payload", "matches",
        "source_selector", "routes", "destination_selector", "weight", "fallthrough", "labels",
        "network_service_names", "network_service_labels", "url", "expiration_time",
        "initial_registration_time", "path_ids", "x"]
_DATES = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.sampled_from(["NetworkService", "NetworkServiceEndpoint", "IP", "db", "tcp://1.2.3.4:5",
                     "unix:///x.sock", "2030-01-02T03:04:05Z", "-1", 2**32, 2**64, -1]),
    _DATES,
    st.builds(lambda d, minutes: d.replace(tzinfo=timezone(timedelta(minutes=minutes))),
              _DATES, st.integers(-1439, 1439)),
)
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(KEYS), SCALARS), inner,
                                            max_size=5)),
    max_leaves=25,
)


def dump(documents: list[Any]) -> str | None:
    try:
        return yaml.safe_dump_all(documents, allow_unicode=True)
    except (yaml.YAMLError, ValueError, TypeError):  # e.g. a key PyYAML cannot represent
        return None


@settings(FUZZ, max_examples=EXAMPLES["manifest_yaml"])
@given(documents=st.lists(DOCS, min_size=1, max_size=3))
# Timestamps with an offset that moves them out of protobuf's range (years 1-9999 in UTC)
@example(documents=[{"kind": "NetworkServiceEndpoint", "name": "e", "url": "tcp://1.2.3.4:5",
                     "network_service_names": ["db"],
                     "expiration_time": datetime(9999, 12, 31, 23, 30,
                                                 tzinfo=timezone(timedelta(hours=-2)))}])
@example(documents=[{"kind": "NetworkServiceEndpoint", "name": "e", "url": "tcp://1.2.3.4:5",
                     "network_service_names": ["db"],
                     "expiration_time": datetime(1, 1, 1, 0, 30,
                                                 tzinfo=timezone(timedelta(hours=2)))}])
def test_any_yaml_shape_gives_records_or_a_manifest_error(documents: list[Any]) -> None:
    text = dump(documents)
    if text is not None:
        check_load(text)


# --- records that are nearly right -------------------------------------------------------------

NAMES = st.one_of(st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}[a-z0-9]", fullmatch=True),
                  st.text(max_size=70), st.just("x" * 300))
LABELS = st.dictionaries(st.one_of(NAMES, st.integers()), st.one_of(NAMES, st.integers(),
                                                                   st.none()), max_size=4)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        record: dict[str, Any] = {
            "kind": "NetworkService", "name": draw(NAMES),
            "payload": draw(st.one_of(st.sampled_from(["IP", "ETHERNET", ""]), SCALARS)),
            "matches": [
                {"source_selector": draw(LABELS),
                 "routes": [{"destination_selector": draw(LABELS),
                             "weight": draw(st.one_of(st.integers(-1, 2**33), SCALARS))}],
                 "fallthrough": draw(st.one_of(st.booleans(), SCALARS))}
                for _ in range(draw(st.integers(0, 3)))
            ],
        }
    else:
        services = draw(st.lists(NAMES, max_size=3))
        record = {
            "kind": "NetworkServiceEndpoint", "name": draw(NAMES),
            "url": draw(st.one_of(st.sampled_from(["tcp://10.0.0.1:5000", "unix:///run/x.sock",
                                                   "tcp://[fe80::1:5000", "tcp://h:99999"]),
                                  st.text(max_size=30))),
            "network_service_names": services,
            "network_service_labels": {s: {"labels": draw(LABELS)} for s in services},
        }
        if draw(st.booleans()):
            record["expiration_time"] = draw(st.one_of(SCALARS, st.text(max_size=30)))
    if draw(st.booleans()):  # Kubernetes style
        record = {"apiVersion": "networkservicemesh.io/v1", "kind": record.pop("kind"),
                  "metadata": {"name": record.pop("name")}, "spec": record}
    return record


@settings(FUZZ, max_examples=EXAMPLES["manifest_records"])
@given(documents=st.lists(records(), min_size=1, max_size=3))
def test_nearly_right_records_give_records_or_a_manifest_error(
    documents: list[dict[str, Any]],
) -> None:
    text = dump(documents)
    if text is not None:
        check_load(text)


# --- nsmctl status rows ------------------------------------------------------------------------

METRIC_VALUES = st.one_of(st.text(max_size=12), st.sampled_from(["²", "١٢", "1e3", "-5", "", "0"]),
                          st.integers(0, 2**70).map(str))
METRIC_KEYS = st.sampled_from(["client_rx_bytes", "client_tx_bytes", "wireguard_rx_bytes",
                               "wireguard_tx_bytes", "wireguard_last_handshake_age_seconds",
                               "mtu", "x"])


@settings(FUZZ, max_examples=EXAMPLES["status_metrics"])
@given(metrics=st.lists(st.dictionaries(METRIC_KEYS, METRIC_VALUES, max_size=5), max_size=3),
       names=st.lists(st.text(max_size=10), max_size=3))
# once a ValueError: '²'.isdigit() is true, float('²') fails
@example(metrics=[{"client_rx_bytes": "²"}], names=[])
# once a rich MarkupError: a segment named "[/]" closed a tag that was never opened
@example(metrics=[{}], names=["[/]"])
@example(metrics=[{}], names=["[bold]x"])
def test_status_rows_summarise_any_metrics(metrics: list[dict[str, str]],
                                           names: list[str]) -> None:
    conn = Connection(id="c", network_service="db")
    for i, values in enumerate(metrics):
        conn.path.path_segments.append(PathSegment(name=names[i] if i < len(names) else "",
                                                   id=str(i), metrics=values))
    as_dict = json_format.MessageToDict(conn, preserving_proto_field_name=True)
    row = summary(as_dict)
    assert set(row) >= {"id", "service", "rx_tx", "path"}
    assert row["id"] == ("0" if metrics else "c")  # the one ID: the client's (first) segment
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        console().print(table([as_dict]))  # no MarkupError
    path_line = io.StringIO()
    with contextlib.redirect_stdout(path_line):
        console().print(f"path: {row['path']}")
    for bracket in "[]":  # printed as they are (rich may drop control characters, not these)
        assert path_line.getvalue().count(bracket) == row["path"].count(bracket)


def test_status_byte_counts() -> None:
    conn = Connection(id="c")
    conn.path.path_segments.append(PathSegment(id="1", metrics={"client_rx_bytes": "2048",
                                                                "client_tx_bytes": "²"}))
    row = summary(json_format.MessageToDict(conn, preserving_proto_field_name=True))
    assert row["rx_tx"] == "2.0KiB/-"



