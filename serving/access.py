"""Who may call a route, and how often: one FastAPI dependency the collector, the API and the
operations service all declare on their routes (``dependencies=[Depends(access.require(scope))]``).

In order, a request is checked against

1. the per-address rate limit (``auth.*_address_rate``; the client address is the peer, or
   the client named by ``X-Forwarded-For`` when the peer is a trusted proxy),
2. its key, when ``auth.enabled``: ``Authorization: Bearer <key>`` everywhere; on the collector
   also a publishable key as ``X-Streamrec-Key`` or ``?key=`` (``navigator.sendBeacon`` cannot
   set headers); on the operations service also HTTP Basic with the key as the password, so a
   browser opening the page asks for it,
3. the per-key rate limit (``auth.*_key_rate``).

Refusals are JSON ``{"error": ...}`` as the collector's other errors: 401 with
``WWW-Authenticate: Bearer`` (no key, an unknown or wrong one, a revoked one), 403 (a valid key
without the scope, a publishable key from a foreign origin), 429 with ``Retry-After`` in whole
seconds, 503 while the key store cannot be read. Routes without the dependency (``/healthz``,
``/metrics``) stay open: metrics carry counts and latencies, never user data, and are scraped
from the internal network.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter

from streamrec.store.connection import connect
from streamrec.auth.addresses import ClientAddresses
from streamrec.auth.authenticator import AccessDenied, Authenticator, Principal
from streamrec.auth.keys import Scope
from streamrec.auth.ratelimit import Rate, RateLimiter
from streamrec.auth.store import KeyStore
from streamrec.settings import Settings

log = logging.getLogger(__name__)

KEY_HEADER = "X-Streamrec-Key"
KEY_PARAMETER = "key"


@dataclass(frozen=True)
class Limits:
    """A service's rate limits; a rate of 0 is unlimited."""

    key: Rate
    address: Rate

    @staticmethod
    def none() -> "Limits":
        return Limits(Rate(0, 1), Rate(0, 1))


class Refused(Exception):
    """A request stopped before its route ran; :meth:`Access.install` turns it into the answer."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


class Access:
    def __init__(
        self,
        settings: Settings,
        *,
        service: str,
        registry: CollectorRegistry,
        limits: Limits,
        keys_in_url: bool = False,
        browser_login: bool = False,
    ) -> None:
        auth = settings.auth
        self.enabled = auth.enabled
        self.service = service
        self.limits = limits
        self._keys_in_url = keys_in_url
        self._browser_login = browser_login
        self._addresses = ClientAddresses(auth.trusted_proxies)
        self._redis = connect(settings.redis, socket_timeout=auth.redis_timeout_s, socket_connect_timeout=auth.redis_timeout_s)
        bootstrap = auth.bootstrap_admin_key.get_secret_value() if auth.bootstrap_admin_key else None
        self.keys = Authenticator(KeyStore(self._redis), cache_s=auth.cache_s, bootstrap_key=bootstrap)
        self.limiter = RateLimiter(self._redis)
        self.refused = Counter(
            "streamrec_access_refused", "Requests refused before their route ran, by HTTP status and reason.",
            ["status", "reason"], registry=registry,
        )
        self.unchecked = Counter(
            "streamrec_rate_limit_unchecked",
            "Rate-limit checks skipped because Redis did not answer; those requests were let through (fail open).",
            ["limit"], registry=registry,
        )

    # -- wiring ------------------------------------------------------------------------------

    def install(self, app: FastAPI) -> None:
        """Answer :class:`Refused` requests as JSON errors."""

        async def refused(request: Request, error: Exception) -> Response:
            assert isinstance(error, Refused)
            response = Response(orjson.dumps({"error": error.message}), status_code=error.status, media_type="application/json")
            for name, value in error.headers:
                response.headers.append(name, value)
            return response

        app.add_exception_handler(Refused, refused)

    def require(self, scope: Scope) -> Callable[[Request], Awaitable[Principal | None]]:
        """A dependency that lets a request through only with a key of ``scope`` (when keys are
        on) and within the rate limits; the key's principal is also left in ``request.state``."""

        async def check(request: Request) -> Principal | None:
            principal = await self.check(request, scope)
            request.state.principal = principal
            return principal

        return check

    def announce(self, host: str) -> None:
        """At start: warn when anyone who can reach ``host`` could use the service without a key."""
        if not self.enabled and not _loopback(host):
            log.warning(
                "the %s binds %s with API keys off: anyone who reaches it can use it; set STREAMREC_AUTH__ENABLED=true",
                self.service, host,
            )

    async def close(self) -> None:
        await self._redis.aclose()

    # -- the check ---------------------------------------------------------------------------

    async def check(self, request: Request, scope: Scope) -> Principal | None:
        address = self._addresses.client(request.client.host if request.client else None,
                                         request.headers.getlist("x-forwarded-for"))
        await self._limit("address", address, self.limits.address)
        if not self.enabled:
            return None
        text, in_url = self._credentials(request)
        try:
            principal = await self.keys.authenticate(text, scope=scope, origin=request.headers.get("origin"), in_url=in_url)
        except AccessDenied as denied:
            raise self._refuse(denied.status, denied.reason, denied.message) from None
        await self._limit("key", principal.key_id, self.limits.key)
        return principal

    def _credentials(self, request: Request) -> tuple[str | None, bool]:
        """The key and whether it came outside the Authorization header."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and value:
            return value, False
        if scheme == "basic" and self._browser_login and value:
            try:
                return base64.b64decode(value, validate=True).decode().partition(":")[2] or None, False
            except (binascii.Error, UnicodeDecodeError):
                return None, False
        if self._keys_in_url:
            text = request.headers.get(KEY_HEADER) or request.query_params.get(KEY_PARAMETER)
            if text:
                return text.strip(), True
        return None, False

    async def _limit(self, kind: str, subject: str, rate: Rate) -> None:
        if rate.unlimited:
            return
        limit = f"{self.service}-{kind}"
        verdict = await self.limiter.hit(limit, subject, rate)
        if not verdict.checked:
            self.unchecked.labels(limit).inc()
        if not verdict.allowed:
            per = "key" if kind == "key" else "client address"
            raise self._refuse(
                429, f"rate_{kind}",
                f"rate limit of {rate.per_s:g} requests/s per {per} exceeded; retry after {verdict.retry_after_s} s",
                [("Retry-After", str(verdict.retry_after_s))],
            )

    def _refuse(self, status: int, reason: str, message: str, headers: list[tuple[str, str]] | None = None) -> Refused:
        self.refused.labels(str(status), reason).inc()
        headers = list(headers or [])
        if status == 401:
            headers.append(("WWW-Authenticate", "Bearer"))
            if self._browser_login:  # browsers ask for the key (as the password) when they see Basic
                headers.append(("WWW-Authenticate", f'Basic realm="streamrec {self.service}", charset="UTF-8"'))
        elif status == 503:
            headers.append(("Retry-After", "1"))
        return Refused(status, message, headers)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
