"""sdk.nsmurl: parsing, canonical text, error messages, and property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.errors import InvalidArgument
from sdk.nsmurl import MAX_URL, NsmUrl, parse


def test_full_url() -> None:
    url = parse("kernel://secure-db@cloud-b/nsm0?app=web&tier=front")
    assert url == NsmUrl(
        mechanism="KERNEL",
        network_service="secure-db",
        domain="cloud-b",
        interface="nsm0",
        labels={"app": "web", "tier": "front"},
    )
    assert str(url) == "kernel://secure-db@cloud-b/nsm0?app=web&tier=front"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("kernel://db", "kernel://db"),
        ("KERNEL://db/", "kernel://db"),
        ("kernel://db?", "kernel://db"),
        ("kernel://db.example@my.cluster", "kernel://db.example@my.cluster"),
        (
            "kernel://db?app.kubernetes.io/name=x&empty=",
            "kernel://db?app.kubernetes.io/name=x&empty=",
        ),
        ("kernel://db/eth%3F0", "kernel://db/eth%3F0"),
        ("kernel://db/a@b", "kernel://db/a%40b"),
        ("kernel://db?a%2Db=c", "kernel://db?a-b=c"),
    ],
)
def test_optional_parts_and_canonical_text(text: str, canonical: str) -> None:
    url = parse(text)
    assert str(url) == canonical
    assert parse(canonical) == url


def test_parts_and_hashable() -> None:
    url = NsmUrl.parse("kernel://db")
    assert (url.mechanism, url.network_service, url.domain, url.interface, url.labels) == (
        "KERNEL",
        "db",
        None,
        None,
        {},
    )
    assert parse("kernel://db/eth%3F0").interface == "eth?0"
    assert len({url, parse("KERNEL://db"), NsmUrl("kernel", "db")}) == 1
    assert hash(parse("kernel://d?a=1&b=2")) == hash(parse("kernel://d?b=2&a=1"))


@pytest.mark.parametrize(
    ("text", "field", "hint"),
    [
        ("secure-db", "url", "no mechanism scheme: write <mechanism>://"),
        ("://secure-db", "url", "no mechanism scheme"),
        ("kernel:/secure-db", "url", "no mechanism scheme"),
        ("vfio://db", "url.mechanism", "unknown mechanism 'vfio': accepted mechanisms are kernel"),
        ("\u212aernel://db", "url.mechanism", "unknown mechanism"),  # Kelvin sign lowers to k
        ("kernel://", "url.network_service", "is empty: name the service"),
        ("kernel://@dom", "url.network_service", "is empty"),
        ("kernel://Secure_DB", "url.network_service", "lower-case letters, digits"),
        ("kernel://-db", "url.network_service", "starting and ending with a letter or digit"),
        ("kernel://db@", "url.domain", "is empty after '@'"),
        ("kernel://db@a@b", "url.domain", "not a valid name"),
        ("kernel://db/this-name-is-too-long", "url.interface", "1-15 printable ASCII"),
        ("kernel://db/a/b", "url.interface", "without '/'"),
        ("kernel://db/a:b", "url.interface", "':'"),
        ("kernel://db/a%20b", "url.interface", "whitespace"),
        ("kernel://db/..", "url.interface", "not '.' or '..'"),
        ("kernel://db/%FF", "url.interface", "not UTF-8"),
        ("kernel://db?app", "url.labels", "label 'app' has no value: write app=<value>"),
        ("kernel://db?a=1&&b=2", "url.labels", "empty label"),
        ("kernel://db?a=1&", "url.labels", "empty label"),
        ("kernel://db?a=1&a=2", "url.labels", "label 'a' is given twice: keep one"),
        ("kernel://db?=x", "url.labels['']", "label keys are"),
        ("kernel://db?a=b%20c", "url.labels['a']", "label values are"),
        ("kernel://db?" + "a" * MAX_URL, "url", f"at most {MAX_URL} characters"),
    ],
)
def test_errors_name_the_part_and_the_fix(text: str, field: str, hint: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse(text)
    assert caught.value.field == field
    assert hint in caught.value.problem


def test_caller_names_the_field() -> None:
    with pytest.raises(InvalidArgument, match=r"^--url\.mechanism: unknown mechanism"):
        parse("memif://db", field="--url")


def test_constructing_invalid_urls_fails() -> None:
    with pytest.raises(InvalidArgument, match=r"url\.mechanism"):
        NsmUrl("vxlan", "db")
    with pytest.raises(InvalidArgument, match=r"url\.interface"):
        NsmUrl("KERNEL", "db", interface="")
    with pytest.raises(InvalidArgument, match=r"^url: must be at most"):
        NsmUrl("KERNEL", "db", labels={f"k{n}": "v" * 63 for n in range(20)})


def test_labels_are_copied() -> None:
    labels = {"app": "web"}
    url = NsmUrl("KERNEL", "db", labels=labels)
    labels["app"] = "db"
    assert url.labels == {"app": "web"}


# --- properties ----------------------------------------------------------------------------

DNS = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?", fullmatch=True)
INTERFACE = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/:"),
    min_size=1,
    max_size=15,
).filter(lambda name: name not in (".", ".."))
LABEL_KEY = st.from_regex(
    r"([a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?",
    fullmatch=True,
)
LABEL_VALUE = st.from_regex(r"([A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?)?", fullmatch=True)
URLS = st.builds(
    NsmUrl,
    mechanism=st.sampled_from(["KERNEL", "kernel", "Kernel"]),
    network_service=DNS,
    domain=st.none() | DNS,
    interface=st.none() | INTERFACE,
    labels=st.dictionaries(LABEL_KEY, LABEL_VALUE, max_size=5),
)


@settings(max_examples=200)
@given(URLS)
def test_every_valid_url_round_trips(url: NsmUrl) -> None:
    text = str(url)
    assert parse(text) == url
    assert str(parse(text)) == text


URLISH = st.text(alphabet="kernelKERNEL\u212a:/@?&=%.-_ab09 \t#\x00é", max_size=40)


@settings(max_examples=500)
@given(st.text(max_size=60) | URLISH | st.builds("kernel://{}".format, URLISH | st.text()))
def test_arbitrary_text_only_ever_raises_invalid_argument(text: str) -> None:
    try:
        url = parse(text)
    except InvalidArgument:
        return
    assert parse(str(url)) == url  # whatever parses, its canonical text parses back to it
