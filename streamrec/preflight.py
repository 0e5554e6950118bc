"""Start-up checks: can this process reach Kafka and Redis with the settings it was given?

A wrong SASL password, a TLS listener reached in plaintext or a Redis that wants a password do
not make a client fail: librdkafka and aiokafka reconnect, Faust waits for its brokers forever
and redis-py retries, so a process that can never work looks merely slow. Every entry point
(the CLI commands that talk to Kafka, each service and worker) therefore calls :func:`check`
before it starts anything. A refused login or a failed TLS handshake ends the check at once;
brokers that do not answer (still starting, a wrong address) are waited for up to the
section's ``preflight_timeout_s``. Either way the process exits with a :class:`PreflightError`
that names the settings to fix, not a stack trace from a retry loop.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import redis
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streamrec.kafka_client import client_config
from streamrec.settings import KafkaSettings, RedisSettings, Settings
from streamrec.store.connection import connect_blocking

KAFKA = "STREAMREC_KAFKA__"
REDIS = "STREAMREC_REDIS__"

# Give up at once on these: waiting longer cannot change the answer.
_REFUSED = {KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED}


class PreflightError(RuntimeError):
    """A service is unreachable or refused this process; the message names the settings to fix."""


def check(settings: Settings, *, kafka: bool = False, redis: bool = False) -> None:
    """Check the services a process needs, Kafka first (most processes need it)."""
    if kafka:
        check_kafka(settings.kafka)
    if redis:
        check_redis(settings.redis)


def _readable(files: dict[str, Path | None]) -> None:
    for setting, path in files.items():
        if path is not None and not path.is_file():
            raise PreflightError(f"{setting} = {path}: no such file")
        if path is not None:
            try:
                path.open("rb").close()
            except OSError as error:
                raise PreflightError(f"{setting} = {path}: cannot be read ({error.strerror})") from None


def check_kafka(kafka: KafkaSettings, timeout_s: float | None = None) -> None:
    """Ask the brokers for metadata as every client of this process will; raise
    :class:`PreflightError` when they refuse the login or TLS, or do not answer in ``timeout_s``."""
    timeout_s = kafka.preflight_timeout_s if timeout_s is None else timeout_s
    _readable({f"{KAFKA}SSL_CA_FILE": kafka.ssl_ca_file, f"{KAFKA}SSL_CERT_FILE": kafka.ssl_cert_file,
               f"{KAFKA}SSL_KEY_FILE": kafka.ssl_key_file})
    errors: list[KafkaError] = []
    admin = AdminClient({**client_config(kafka, client="preflight"), "error_cb": errors.append, "logger": _QUIET})
    deadline = time.monotonic() + timeout_s
    last: str = "no answer"
    while True:
        try:
            if admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic()))).brokers:
                return
        except KafkaException as error:
            last = error.args[0].str()
        admin.poll(0)  # serves error_cb
        refused = next((error for error in errors if error.code() in _REFUSED), None)
        if refused is not None:
            raise PreflightError(_kafka_refused(kafka, refused))
        # "2/2 brokers are down" says less than the connection error that preceded it.
        telling = [error for error in errors if error.code() != KafkaError._ALL_BROKERS_DOWN]
        if telling:
            last = telling[-1].str()
        if time.monotonic() >= deadline:
            raise PreflightError(
                f"Kafka at {kafka.bootstrap_servers} did not answer within {timeout_s:g} s ({last}). Check "
                f"{KAFKA}BOOTSTRAP_SERVERS, and that {KAFKA}SECURITY_PROTOCOL ({kafka.security_protocol}) is what "
                "that listener speaks."
            )


def _kafka_refused(kafka: KafkaSettings, error: KafkaError) -> str:
    at = f"Kafka at {kafka.bootstrap_servers}"
    text = error.str()
    if "Unsupported SASL mechanism" in text:
        return (f"{at} does not enable SASL mechanism {kafka.sasl_mechanism}: {text}. "
                f"Set {KAFKA}SASL_MECHANISM to one the listener supports.")
    if "handshake failed" in text and "mechanism" in text:  # a listener that speaks no SASL at all
        return (f"{at} does not speak SASL: {text}. Check {KAFKA}BOOTSTRAP_SERVERS (the SASL listener's port) and "
                f"{KAFKA}SECURITY_PROTOCOL ({kafka.security_protocol}).")
    if error.code() == KafkaError._SSL:
        return (
            f"TLS with {at} failed: {error.str()}. Check {KAFKA}SSL_CA_FILE (the CA that signed the brokers' "
            f"certificates), {KAFKA}SSL_CERT_FILE / SSL_KEY_FILE / SSL_KEY_PASSWORD, and that "
            f"{KAFKA}SECURITY_PROTOCOL ({kafka.security_protocol}) is what that listener speaks."
        )
    if not kafka.security_protocol.startswith("SASL_"):
        return f"{at} wants a login: {error.str()}. Set {KAFKA}SECURITY_PROTOCOL to SASL_PLAINTEXT or SASL_SSL with {KAFKA}SASL_USERNAME / SASL_PASSWORD."
    return (
        f"{at} refused the SASL credentials for user {kafka.sasl_username!r} ({kafka.sasl_mechanism}): {error.str()}. "
        f"Fix {KAFKA}SASL_USERNAME / {KAFKA}SASL_PASSWORD, or {KAFKA}SASL_MECHANISM if the listener enables another."
    )


def check_redis(settings: RedisSettings, timeout_s: float | None = None) -> None:
    """PING Redis as every client of this process will; raise :class:`PreflightError` when it
    refuses the login, the ACL user may not run commands, or it does not answer in ``timeout_s``."""
    timeout_s = settings.preflight_timeout_s if timeout_s is None else timeout_s
    if settings.uses_tls:
        _readable({f"{REDIS}CA_FILE": settings.ca_file, f"{REDIS}CERT_FILE": settings.cert_file,
                   f"{REDIS}KEY_FILE": settings.key_file})
    at = f"Redis at {_without_credentials(settings.url or '')}"
    deadline = time.monotonic() + timeout_s
    while True:
        step = max(0.1, min(2.0, deadline - time.monotonic()))
        client = connect_blocking(settings, socket_timeout=step, socket_connect_timeout=step)
        try:
            client.ping()
            return
        except redis.AuthenticationError as error:  # WRONGPASS, NOAUTH: before ConnectionError, its base
            if settings.password is None and "@" not in (settings.url or ""):
                raise PreflightError(f"{at} requires a login ({_sentence(error)}), and none is set: set {REDIS}USERNAME "
                                     f"and {REDIS}PASSWORD (or {REDIS}PASSWORD alone for requirepass).") from None
            user = settings.username or "default"
            raise PreflightError(
                f"{at} refused the login of user {user!r}: {_sentence(error)}. Fix {REDIS}USERNAME / {REDIS}PASSWORD "
                f"(or the credentials in {REDIS}URL)."
            ) from None
        except redis.ResponseError as error:  # NOPERM: logged in, but the ACL forbids the command
            raise PreflightError(f"{at}: {_sentence(error)}. The ACL user {settings.username!r} needs every command streamrec runs "
                                 f"(e.g. `+@all ~* &*`); see {REDIS}USERNAME.") from None
        except (redis.ConnectionError, redis.TimeoutError) as error:
            if time.monotonic() >= deadline:
                tls = "" if settings.uses_tls else f", or {REDIS}TLS=true if it only speaks TLS"
                raise PreflightError(
                    f"{at} did not answer within {timeout_s:g} s ({error}). Check {REDIS}URL{tls}"
                    + (f", and {REDIS}CA_FILE for its certificate" if settings.uses_tls else "") + "."
                ) from None
            time.sleep(0.2)
        finally:
            client.close()


def _sentence(error: Exception) -> str:
    return str(error).strip().rstrip(".")


def _without_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


# librdkafka logs every failed connection; the check reports the outcome in one message instead.
_QUIET = logging.getLogger("streamrec.preflight.kafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False

__all__ = ["PreflightError", "check", "check_kafka", "check_redis"]
