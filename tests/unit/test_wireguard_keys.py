"""Keys: X25519 pairs, conversions, validation, and private keys that never show themselves."""

from __future__ import annotations

import base64
import json

import pytest
import structlog

from forwarder.wireguard import PrivateKey, generate_keypair
from forwarder.wireguard.keys import (
    b64_to_hex,
    hex_to_b64,
    parse_private_key,
    parse_public_key,
)
from sdk.errors import InvalidArgument

# RFC 7748 section 6.1 (Alice).
ALICE_PRIVATE_HEX = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
ALICE_PUBLIC_HEX = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"


def test_public_key_matches_rfc7748_vector() -> None:
    private = parse_private_key(hex_to_b64(ALICE_PRIVATE_HEX))
    assert b64_to_hex(private.public_key()) == ALICE_PUBLIC_HEX


def test_generate_keypair_gives_matching_valid_keys() -> None:
    private, public = generate_keypair()
    assert isinstance(private, PrivateKey)
    assert len(base64.b64decode(private.reveal())) == 32
    assert parse_private_key(private).public_key() == public
    assert generate_keypair()[1] != public


def test_private_key_is_redacted_everywhere_but_reveal() -> None:
    private = generate_keypair()[0]
    assert isinstance(private, PrivateKey)
    raw = private.reveal()
    assert raw not in repr(private)
    assert raw not in str(private)
    assert raw not in f"{private}"
    assert raw not in "%s" % private  # noqa: UP031 - the old operator must redact too
    assert raw not in repr((private, "x"))
    assert raw not in str(InvalidArgument("private_key", f"bad {private}"))
    assert private == raw  # still the same text for code that compares


def test_private_key_is_redacted_in_console_logs() -> None:
    private = parse_private_key(generate_keypair()[0])
    rendered = structlog.dev.ConsoleRenderer(colors=False)(
        None, "info", {"event": "x", "k": private}
    )
    assert private.reveal() not in rendered
    assert "redacted" in rendered
    # JSON sees raw characters: the contract is never to log a key at all.
    assert private.reveal() in json.dumps(private)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("not base64!!", "not valid base64"),
        (base64.b64encode(b"short").decode(), "32 bytes (got 5)"),
        (42, "base64 string"),
    ],
)
def test_bad_keys_name_the_field_and_never_echo_the_value(value: object, problem: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_private_key(value)
    assert caught.value.field == "private_key"
    assert problem in caught.value.problem
    assert str(value) not in str(caught.value) or value == 42


def test_hex_round_trip_and_errors() -> None:
    _, public = generate_keypair()
    assert hex_to_b64(b64_to_hex(public)) == public
    assert parse_public_key(public) == public
    with pytest.raises(InvalidArgument, match="not valid hex"):
        hex_to_b64("zz" * 32, "public_key")
    with pytest.raises(InvalidArgument, match="32 bytes of hex"):
        hex_to_b64("ab" * 31, "public_key")
