"""Redis clients built from ``RedisSettings``: the one place a URL becomes a connection.

Every process connects through :func:`connect`, so an ACL user, a password or TLS set in the
settings reaches every client. The URL keeps what it says (host, port, database, a user or
password in it); ``username``/``password`` replace those in the URL, ``tls`` upgrades
``redis://`` to ``rediss://``, and the CA and client-certificate files go to the TLS socket.
With none of them set the client is exactly ``from_url(url)``.

The blocking client (:func:`connect_blocking`) is for code that has no event loop: the start-up
check, the local stack's health probe and the benchmark drivers. Both take their options from
:func:`connection_options`, so the two cannot disagree on how they reach Redis.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
import redis.asyncio

from streamrec.settings import RedisSettings


def connection_options(settings: RedisSettings) -> tuple[str, dict[str, Any]]:
    """The URL and keyword arguments for ``Redis.from_url`` that reach Redis as ``settings`` say.

    redis-py lets a URL's user and password win over keyword arguments, so explicit ones are
    taken out of the URL and passed as arguments instead.
    """
    if settings.url is None:
        raise ValueError("RedisSettings.url is unset: build the section through Settings(), which fills it")
    parts = urlsplit(settings.url)
    options: dict[str, Any] = {}
    netloc = parts.netloc
    if settings.password is not None:
        netloc = netloc.rpartition("@")[2]  # drop the URL's credentials: the settings' replace them
        options["password"] = settings.password.get_secret_value()
        username = settings.username if settings.username is not None else unquote(parts.username or "") or None
        if username is not None:
            options["username"] = username
    scheme = "rediss" if settings.tls and parts.scheme == "redis" else parts.scheme
    if settings.uses_tls:
        if settings.ca_file is not None:
            options["ssl_ca_certs"] = str(settings.ca_file)
        if settings.cert_file is not None and settings.key_file is not None:
            options["ssl_certfile"] = str(settings.cert_file)
            options["ssl_keyfile"] = str(settings.key_file)
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment)), options


def connect(settings: RedisSettings, *, decode_responses: bool = False, **client_options: Any) -> redis.asyncio.Redis:
    """An asyncio client (what the workers, the API and the stores use); ``client_options`` such
    as ``socket_timeout`` go to redis-py unchanged.

    Its pool holds at most ``max_connections`` and makes a call beyond them wait (up to
    ``pool_timeout_s``) rather than fail, so a burst of concurrent calls is slowed, not lost."""
    url, options = connection_options(settings)
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=settings.max_connections, timeout=settings.pool_timeout_s,
        decode_responses=decode_responses, **options, **client_options,
    )
    return redis.asyncio.Redis.from_pool(pool)


def connect_blocking(settings: RedisSettings, *, decode_responses: bool = False, **client_options: Any) -> redis.Redis:
    """A blocking client, for callers without an event loop (see the module docstring)."""
    url, options = connection_options(settings)
    return redis.Redis.from_url(url, decode_responses=decode_responses, **options, **client_options)
