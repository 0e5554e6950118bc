"""The Faust app both workers (streams, recs) are built on: one copy of the broker settings.

The brokers are reached with the same security as every other client (``broker_credentials``
from ``KafkaSettings``: SASL user and mechanism, TLS context). Raw bytes in and out (the event
contract parses them), topics owned by `streamrec topics create` (never declared by a worker),
offsets committed every second, and a heartbeat at a quarter of the session
timeout so that a killed worker's partitions move within that timeout. What a worker publishes
goes through :class:`streamrec.delivery.KafkaDeliverer` (librdkafka, idempotent, ``acks=all``),
not Faust's producer.
"""

from __future__ import annotations

from typing import Any, Literal

import faust
from faust.types.auth import CredentialsT

from streamrec.kafka_client import ssl_context
from streamrec.settings import KafkaSettings, Settings


def broker_url(bootstrap_servers: str) -> str:
    """``host:port,host:port`` → Faust's ``kafka://host:port;kafka://host:port``."""
    return ";".join(f"kafka://{server.strip()}" for server in bootstrap_servers.split(","))


def broker_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for the listener ``kafka`` describes (None: PLAINTEXT).

    Faust hands a SASL mechanism to aiokafka as it is, and aiokafka speaks SCRAM-SHA-256/512 as
    well as PLAIN; a TLS context turns SASL_PLAINTEXT into SASL_SSL.
    """
    context = ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL_"):
        assert kafka.sasl_password is not None  # the settings' validator
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def aiokafka_auth(kafka: KafkaSettings) -> dict[str, Any]:
    """The same credentials as keyword arguments of a bare aiokafka client, translated by Faust's
    own function so that such a client (a benchmark's listener) reaches the brokers as a worker does."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    return credentials_to_aiokafka_auth(broker_credentials(kafka))


def worker_app(
    app_id: str,
    settings: Settings,
    *,
    web_host: str,
    web_port: int,
    session_timeout_s: float,
    auto_offset_reset: Literal["earliest", "latest"],
    **overrides: Any,
) -> faust.App:
    return faust.App(
        app_id,
        broker=broker_url(settings.bootstrap_servers),
        broker_credentials=broker_credentials(settings.kafka),
        store="memory://",
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        web_host=web_host,
        web_bind=web_host,
        web_port=web_port,
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset=auto_offset_reset,
        producer_acks=-1,
        broker_commit_interval=1.0,
        broker_session_timeout=session_timeout_s,
        broker_heartbeat_interval=max(0.5, session_timeout_s / 4),
        **overrides,
    )


def run_worker(app: faust.App, *, loglevel: str) -> None:
    """Run ``app`` in a Faust worker until stopped, without Faust's terminal spinner.

    The spinner turns every log call of every library into a record: it sets the root logger to
    DEBUG so that each message can spin it, and aiokafka logs each produced message at debug
    level. Measured in the streams worker, that was 6 % of its CPU time (py-spy), and it wrote
    cursor escape codes into every log file.
    """
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()
