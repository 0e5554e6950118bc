"""What an API key is: its two kinds, its scopes, its string form and how it is stored.

A key reads ``sr_pk_<id>_<secret>`` (publishable) or ``sr_sk_<id>_<secret>`` (secret). The id
names the stored record, so a service finds the key with one lookup and logs and rate limits
can name it; the secret is ``secrets.token_urlsafe(32)``, 256 random bits.

Only a SHA-256 digest of the whole key string is stored. A fast hash is the right one here:
slow password hashes (bcrypt, scrypt, Argon2) exist to make guessing low-entropy passwords
expensive, and nobody can enumerate 2**256 random secrets however fast the hash is; a slow hash
would only cost every request milliseconds of CPU. Digests are compared with
:func:`hmac.compare_digest`, so the time taken says nothing about how much of a guess matched.

**Publishable** keys are meant to sit in a web page: they can only write events
(``events:write``), only from a browser on one of the key's origins, and are revoked when abused.
**Secret** keys are for backends and operators and carry any set of scopes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Literal, get_args
from urllib.parse import urlsplit

Scope = Literal["events:write", "recs:read", "ops:read", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
Kind = Literal["publishable", "secret"]
KINDS: tuple[Kind, ...] = get_args(Kind)
PUBLISHABLE_SCOPES: frozenset[Scope] = frozenset({"events:write"})

PREFIXES: dict[Kind, str] = {"publishable": "sr_pk_", "secret": "sr_sk_"}
ID_BYTES = 6  # 12 hex characters: ids only need to be unique, the secret carries the entropy
SECRET_BYTES = 32
_ID = re.compile(r"[0-9a-f]{12}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)


class InvalidKeySpec(ValueError):
    """Kind, scopes or origins that do not make a usable key."""


@dataclass(frozen=True)
class PresentedKey:
    """A key string as a client sent it, split into its parts (nothing checked against the store yet)."""

    kind: Kind
    key_id: str
    text: str = field(repr=False)


@dataclass(frozen=True)
class KeyRecord:
    """A stored key: everything but the key itself, which only its owner has."""

    key_id: str
    name: str
    kind: Kind
    scopes: frozenset[Scope]
    origins: tuple[str, ...]
    created_at: float
    digest: str = field(repr=False)
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def matches(self, presented: PresentedKey) -> bool:
        """The presented key is this one (same kind, same digest; compared in constant time)."""
        same = hmac.compare_digest(digest(presented.text), self.digest)
        return same and presented.kind == self.kind

    def allows_origin(self, origin: str | None) -> bool:
        """Publishable keys answer only browsers on their origins; secret keys ignore Origin."""
        if self.kind == "secret":
            return True
        return origin is not None and normalize_origin(origin, strict=False) in self.origins


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def new_key(kind: Kind) -> tuple[str, str]:
    """A fresh ``(key id, key string)``; the string is shown once and never stored."""
    key_id = secrets.token_hex(ID_BYTES)
    return key_id, f"{PREFIXES[kind]}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def parse_key(text: str) -> PresentedKey | None:
    """The parts of a well-formed key string, or None (the caller answers "invalid key")."""
    for kind, prefix in PREFIXES.items():
        if text.startswith(prefix):
            key_id, _, secret = text[len(prefix):].partition("_")
            if _ID.fullmatch(key_id) and _SECRET.fullmatch(secret):
                return PresentedKey(kind, key_id, text)
    return None


def normalize_origin(origin: str, *, strict: bool = True) -> str:
    """``scheme://host[:port]`` in lower case, as browsers send ``Origin``.

    With ``strict`` (creating a key) anything else raises :class:`InvalidKeySpec`; otherwise
    (a request's header) a value that is not an origin comes back as given and matches nothing.
    """
    candidate = origin.strip().lower()
    parts = urlsplit(candidate)
    if parts.scheme in ("http", "https") and parts.hostname and not parts.path and not parts.query \
            and not parts.fragment and not parts.username and not parts.password:
        try:
            port = parts.port
        except ValueError:
            port = None
            if strict:
                raise InvalidKeySpec(f"origin {origin!r} has an invalid port") from None
        default = {"http": 80, "https": 443}[parts.scheme]
        netloc = parts.hostname if port in (None, default) else f"{parts.hostname}:{port}"
        if ":" in parts.hostname:  # IPv6 literal
            netloc = f"[{parts.hostname}]" if port in (None, default) else f"[{parts.hostname}]:{port}"
        return f"{parts.scheme}://{netloc}"
    if strict:
        raise InvalidKeySpec(f"origin {origin!r} is not scheme://host[:port] (e.g. https://shop.example)")
    return candidate


def check_spec(kind: Kind, scopes: set[Scope] | frozenset[Scope], origins: list[str] | tuple[str, ...]) -> tuple[frozenset[Scope], tuple[str, ...]]:
    """The scopes and normalised origins of a new key, or :class:`InvalidKeySpec` saying why not."""
    if kind not in KINDS:
        raise InvalidKeySpec(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise InvalidKeySpec(f"unknown scope(s) {', '.join(unknown)}; scopes are {', '.join(SCOPES)}")
    normalized = tuple(dict.fromkeys(normalize_origin(origin) for origin in origins))
    if kind == "publishable":
        scopes = frozenset(scopes) or PUBLISHABLE_SCOPES
        if scopes != PUBLISHABLE_SCOPES:
            raise InvalidKeySpec("a publishable key sits in web pages, so it can only have the scope events:write")
        if not normalized:
            raise InvalidKeySpec("a publishable key needs at least one origin (the shop's pages, e.g. https://shop.example)")
        return PUBLISHABLE_SCOPES, normalized
    if not scopes:
        raise InvalidKeySpec(f"a secret key needs at least one scope of {', '.join(SCOPES)}")
    if normalized:
        raise InvalidKeySpec("origins bind publishable keys to web pages; a secret key must never be in one")
    return frozenset(scopes), ()
