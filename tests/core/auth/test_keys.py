"""Key strings, digests and what a key of each kind may be: pure logic, no services."""

from __future__ import annotations

import hashlib

import pytest

from streamrec.auth.addresses import ClientAddresses
from streamrec.auth.keys import (
    InvalidKeySpec,
    KeyRecord,
    check_spec,
    digest,
    new_key,
    normalize_origin,
    parse_key,
)


@pytest.mark.parametrize(("kind", "prefix"), [("publishable", "sr_pk_"), ("secret", "sr_sk_")])
def test_a_key_has_its_kind_an_id_and_a_256_bit_secret(kind, prefix):
    key_id, text = new_key(kind)
    assert text.startswith(f"{prefix}{key_id}_") and len(key_id) == 12
    assert len(text) - len(prefix) - len(key_id) - 1 == 43  # token_urlsafe(32): 256 random bits
    presented = parse_key(text)
    assert (presented.kind, presented.key_id, presented.text) == (kind, key_id, text)
    assert text not in repr(presented)  # never in a log line by accident
    assert new_key(kind) != (key_id, text)


@pytest.mark.parametrize("text", [
    "", "Bearer", "sr_pk_", "sr_xk_0123456789ab_" + "a" * 43, "sr_pk_0123456789AB_" + "a" * 43,
    "sr_pk_0123456789ab_" + "a" * 42, "sr_pk_0123456789ab_" + "a" * 44, "sr_pk_0123456789ab_" + "a" * 42 + "!",
])
def test_malformed_key_strings_are_not_keys(text):
    assert parse_key(text) is None


def test_a_record_matches_only_its_own_key_string_and_kind():
    key_id, text = new_key("secret")
    record = KeyRecord(key_id, "backend", "secret", frozenset({"recs:read"}), (), 0.0, digest(text))
    assert digest(text) == hashlib.sha256(text.encode()).hexdigest()
    assert text not in repr(record) and record.digest not in repr(record)
    assert record.matches(parse_key(text))
    secret = text.split("_", 3)[3]
    assert not record.matches(parse_key(f"sr_pk_{key_id}_{secret}"))  # same secret, other kind
    assert not record.matches(parse_key(f"sr_sk_{key_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"))


def test_publishable_keys_write_events_from_their_origins_only():
    scopes, origins = check_spec("publishable", set(), ["https://Shop.example", "https://shop.example:443", "http://localhost:3000"])
    assert scopes == {"events:write"} and origins == ("https://shop.example", "http://localhost:3000")
    record = KeyRecord("0" * 12, "shop", "publishable", scopes, origins, 0.0, "x")
    assert record.allows_origin("https://shop.example") and record.allows_origin("HTTPS://SHOP.EXAMPLE")
    assert not record.allows_origin("https://shop.example.evil") and not record.allows_origin(None)
    assert not record.allows_origin("null")
    with pytest.raises(InvalidKeySpec, match="only have the scope events:write"):
        check_spec("publishable", {"events:write", "recs:read"}, ["https://shop.example"])
    with pytest.raises(InvalidKeySpec, match="needs at least one origin"):
        check_spec("publishable", {"events:write"}, [])


def test_secret_keys_carry_scopes_and_never_origins():
    assert check_spec("secret", {"recs:read", "admin"}, []) == ({"recs:read", "admin"}, ())
    with pytest.raises(InvalidKeySpec, match="needs at least one scope"):
        check_spec("secret", set(), [])
    with pytest.raises(InvalidKeySpec, match="must never be in one"):
        check_spec("secret", {"events:write"}, ["https://shop.example"])
    with pytest.raises(InvalidKeySpec, match="unknown scope"):
        check_spec("secret", {"recs:write"}, [])


@pytest.mark.parametrize("origin", ["*", "null", "shop.example", "https://shop.example/path", "ftp://shop.example",
                                    "https://user@shop.example", "https://shop.example?x=1"])
def test_an_origin_is_scheme_host_and_port(origin):
    with pytest.raises(InvalidKeySpec):
        normalize_origin(origin)


def test_forwarded_for_counts_only_behind_trusted_proxies():
    addresses = ClientAddresses(["10.0.0.0/8", "fd00::/8"])
    assert addresses.client("198.51.100.9", ["203.0.113.7"]) == "198.51.100.9"  # not a proxy of ours: header ignored
    assert addresses.client("10.0.0.5", ["203.0.113.7"]) == "203.0.113.7"
    # Read from the right: the client wrote the left part itself.
    assert addresses.client("10.0.0.5", ["1.1.1.1, 203.0.113.7, 10.1.2.3"]) == "203.0.113.7"
    assert addresses.client("10.0.0.5", ["1.1.1.1", "203.0.113.7"]) == "203.0.113.7"  # repeated headers join
    assert addresses.client("10.0.0.5", ["10.9.9.9"]) == "10.9.9.9"  # only proxies: the first hop we were told of
    assert addresses.client("10.0.0.5", []) == "10.0.0.5"
    assert addresses.client("10.0.0.5", ["garbage, 10.2.2.2"]) == "10.2.2.2"
    assert addresses.client("::ffff:10.0.0.5", ["[2001:db8::1]:443"]) == "2001:db8::1"
    assert addresses.client("fd00::1", ["203.0.113.8:5000"]) == "203.0.113.8"
    assert addresses.client(None, ["203.0.113.7"]) == "unknown"
