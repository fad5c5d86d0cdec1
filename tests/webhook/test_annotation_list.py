"""NSM's pod annotation value: several NSM URLs, comma-separated (``sdk.nsmurl.parse_list``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdk.errors import InvalidArgument
from sdk.nsmurl import MAX_URLS, parse_list


def test_several_urls_with_labels_and_spaces() -> None:
    urls = parse_list("kernel://secure-db/nsm-1?app=web, kernel://cache@cloud-b/nsm-2")
    assert [str(url) for url in urls] == [
        "kernel://secure-db/nsm-1?app=web", "kernel://cache@cloud-b/nsm-2"]
    assert urls[0].labels == {"app": "web"} and urls[1].domain == "cloud-b"


@pytest.mark.parametrize(("text", "field", "words"), [
    ("", "urls", "is empty"),
    ("kernel://a,,kernel://b", "urls[1]", "two ','"),
    ("kernel://a,", "urls[1]", "trailing"),
    ("kernel://a/nsm0,kernel://b/nsm0", "urls[1].interface", "also the interface of urls[0]"),
    ("kernel://a/averyveryverylongname", "urls[0].interface", "1-15"),
    ("memif://a", "urls[0].mechanism", "unknown mechanism 'memif'"),
    ("secure-db", "urls[0]", "no mechanism scheme"),
    (",".join(f"kernel://s{i}" for i in range(MAX_URLS + 1)), "urls", "at most"),
])
def test_bad_lists_name_the_item_and_the_rule(text: str, field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_list(text)
    assert caught.value.field == field and words in caught.value.problem


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_invalid_argument(text: str) -> None:
    try:
        urls = parse_list(text)
    except InvalidArgument:
        return
    assert parse_list(",".join(str(url) for url in urls)) == urls
