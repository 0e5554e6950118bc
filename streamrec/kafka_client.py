"""``KafkaSettings`` in each client library's own terms: librdkafka's config, an SSL context.

Every Kafka client the project makes starts here: confluent-kafka's producers, consumers and
admin clients take :func:`client_config` (plus their own options), and aiokafka under Faust
takes the credentials that :mod:`streamrec.faust_app` builds from :func:`ssl_context`. The
listener's security (SASL user, TLS files) is therefore set once, in the settings, and no client
can be built without it: a broker that requires SCRAM is reached by the SDK, the collector, the
workers, the trainer, the lag reader and the tests alike.
"""

from __future__ import annotations

import ssl
from typing import Any

from streamrec.settings import KafkaSettings


def client_config(kafka: KafkaSettings, *, client: str) -> dict[str, Any]:
    """librdkafka settings that reach the brokers as ``kafka`` says; ``client`` names the client
    in broker logs (``<kafka.client_id>-<client>``). Callers add their own options to the dict."""
    if kafka.bootstrap_servers is None:
        raise ValueError("KafkaSettings.bootstrap_servers is unset: build the section through Settings(), which fills it")
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": f"{kafka.client_id}-{client}",
        "security.protocol": kafka.security_protocol,
    }
    if kafka.security_protocol.startswith("SASL_"):
        assert kafka.sasl_username is not None and kafka.sasl_password is not None  # the settings' validator
        config.update({
            "sasl.mechanism": kafka.sasl_mechanism,
            "sasl.username": kafka.sasl_username,
            "sasl.password": kafka.sasl_password.get_secret_value(),
        })
    if kafka.ssl_ca_file is not None:
        config["ssl.ca.location"] = str(kafka.ssl_ca_file)
    if kafka.ssl_cert_file is not None and kafka.ssl_key_file is not None:
        config["ssl.certificate.location"] = str(kafka.ssl_cert_file)
        config["ssl.key.location"] = str(kafka.ssl_key_file)
    if kafka.ssl_key_password is not None:
        config["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
    return config


def uses_tls(kafka: KafkaSettings) -> bool:
    return kafka.security_protocol in ("SSL", "SASL_SSL")


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of an SSL or SASL_SSL listener (None for the plaintext ones), for aiokafka.

    Verifies the brokers' certificates and host names against ``ssl_ca_file`` (the default CA
    store when unset), and presents the client certificate when one is configured, as librdkafka
    does with the same settings.
    """
    if not uses_tls(kafka):
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(kafka.ssl_ca_file) if kafka.ssl_ca_file is not None else None
    )
    if kafka.ssl_cert_file is not None and kafka.ssl_key_file is not None:
        password = kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password is not None else None
        context.load_cert_chain(str(kafka.ssl_cert_file), str(kafka.ssl_key_file), password)
    return context
