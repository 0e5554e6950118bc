"""The check a request's key goes through: known, not revoked, right scope, right origin.

Services look keys up in Redis and keep what they found (found or not) for ``auth.cache_s``
seconds, so a busy service asks Redis about a key about once per ``cache_s`` instead of once
per request, and a revocation takes effect everywhere within ``cache_s``. While Redis is away
keys found before keep working until their entry ages out; after that requests are refused with
503 (a key that cannot be checked is never accepted).

An unknown id and a wrong secret get the same answer, so the answers cannot be used to find
which ids exist. ``auth.bootstrap_admin_key`` is accepted with every scope, for provisioning
the first keys and for deployments such as compose.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from streamrec.auth.keys import SCOPES, KeyRecord, Kind, Scope, digest, parse_key
from streamrec.auth.store import KeyStore

BOOTSTRAP_ID = "bootstrap"
MISSING = "missing API key: send `Authorization: Bearer <key>`"
INVALID = "invalid API key"
REVOKED = "API key revoked"


class AccessDenied(Exception):
    """The request may not proceed: ``status`` 401 (who are you?), 403 (not allowed) or 503."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason  # a short label for metrics
        self.message = message


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the key's id (``bootstrap`` for the bootstrap key), kind and scopes."""

    key_id: str
    kind: Kind
    scopes: frozenset[Scope]


class Authenticator:
    def __init__(
        self,
        store: KeyStore,
        *,
        cache_s: float,
        bootstrap_key: str | None = None,
        max_cached: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._cache_s = cache_s
        self._bootstrap = digest(bootstrap_key) if bootstrap_key else None
        self._max_cached = max_cached
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, KeyRecord | None]] = OrderedDict()

    async def authenticate(self, text: str | None, *, scope: Scope, origin: str | None, in_url: bool = False) -> Principal:
        """The principal of key ``text`` if it may use ``scope``, else :class:`AccessDenied`.

        ``in_url``: the key came in a query parameter or the ``X-Streamrec-Key`` header, which
        only publishable keys may use (anything there can end up in logs and browser history).
        """
        if not text:
            raise AccessDenied(401, "missing", MISSING)
        if self._bootstrap is not None and hmac.compare_digest(digest(text), self._bootstrap):
            if in_url:
                raise AccessDenied(401, "secret_in_url", "secret keys are accepted only as `Authorization: Bearer <key>`")
            return Principal(BOOTSTRAP_ID, "secret", frozenset(SCOPES))
        presented = parse_key(text)
        if presented is None:
            raise AccessDenied(401, "invalid", INVALID)
        record = await self._lookup(presented.key_id)
        if record is None or not record.matches(presented):
            raise AccessDenied(401, "invalid", INVALID)
        if record.revoked:
            raise AccessDenied(401, "revoked", REVOKED)
        if in_url and record.kind != "publishable":
            raise AccessDenied(401, "secret_in_url", "secret keys are accepted only as `Authorization: Bearer <key>`")
        if scope not in record.scopes:
            raise AccessDenied(403, "scope", f"this key lacks the scope {scope}")
        if not record.allows_origin(origin):
            if origin is None:
                raise AccessDenied(403, "origin", "a publishable key works only from a browser on one of its origins (no Origin header)")
            raise AccessDenied(403, "origin", f"a publishable key works only from its own web pages; origin {origin!r} is not one of them")
        return Principal(record.key_id, record.kind, record.scopes)

    async def _lookup(self, key_id: str) -> KeyRecord | None:
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self._cache_s:
            return cached[1]
        try:
            record = await self._store.get(key_id)
        except (RedisError, OSError, TimeoutError):
            raise AccessDenied(503, "key_store", "the key store is unreachable; retry shortly") from None
        self._cache[key_id] = (now, record)
        self._cache.move_to_end(key_id)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return record
