"""Every client over a SASL/SCRAM Kafka listener and a Redis that admits one ACL user only.

A stack of its own (Kafka and Redis, no Triton) whose broker has a SASL_PLAINTEXT listener
accepting SCRAM-SHA-512 and whose Redis has its ``default`` user off. The settings point every
client at them the way production would (``STREAMREC_KAFKA__SECURITY_PROTOCOL`` and the SASL
user, ``STREAMREC_REDIS__USERNAME``/``PASSWORD``), and the round trip goes through each kind of
client the project makes: the admin (topics, lag), the SDK producer, the collector, a Faust
worker (the streams worker, as a process started by the CLI), the trainer's consumer, the replay
command and the Redis factory. A wrong password must then end a check, a CLI command and a
worker within seconds, with a message naming the setting, not leave them retrying.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from pydantic import SecretStr

from streamrec.components import ComponentProcess
from streamrec.events import ClickEvent
from streamrec.faust_app import broker_credentials
from streamrec.kafka_admin import commit_groups_at_end, create_topics, end_offsets
from streamrec.kafka_client import client_config
from streamrec.lag import LagReader
from streamrec.preflight import PreflightError, check_kafka, check_redis
from streamrec.producer import EventProducer
from streamrec.settings import KafkaSettings, RedisSettings, Settings
from streamrec.stack import LocalStack
from streamrec.stack.isolated import isolated_stack_settings, stack_environment
from streamrec.stack.process import free_port
from streamrec.store import layout
from streamrec.store.connection import connect, connect_blocking, connection_options
from streamrec.topics import INTERACTION_TOPICS, TOPIC_SPECS, Topic
from tests.conftest import KafkaReader

KAFKA_USER, KAFKA_PASSWORD = "shop-pipeline", "scram-s3cret"
REDIS_USER, REDIS_PASSWORD = "streamrec", "acl-s3cret"
STREAMREC = [sys.executable, "-m", "streamrec"]


def client_environment(settings: Settings) -> dict[str, str]:
    """What a `streamrec` process needs to reach the secured stack (the bootstrap address follows the stack)."""
    assert settings.kafka.sasl_password is not None and settings.redis.password is not None
    return {
        **stack_environment(settings.stack),
        "STREAMREC_KAFKA__SECURITY_PROTOCOL": settings.kafka.security_protocol,
        "STREAMREC_KAFKA__SASL_MECHANISM": settings.kafka.sasl_mechanism,
        "STREAMREC_KAFKA__SASL_USERNAME": str(settings.kafka.sasl_username),
        "STREAMREC_KAFKA__SASL_PASSWORD": settings.kafka.sasl_password.get_secret_value(),
        "STREAMREC_KAFKA__PARTITIONS": str(settings.kafka.partitions),
        "STREAMREC_KAFKA__PREFLIGHT_TIMEOUT_S": "10",
        "STREAMREC_REDIS__USERNAME": str(settings.redis.username),
        "STREAMREC_REDIS__PASSWORD": settings.redis.password.get_secret_value(),
    }


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    stack_settings = isolated_stack_settings(
        tmp_path_factory.mktemp("secured") / "state", services=["kafka", "redis"],
        kafka_sasl_port=free_port(), kafka_sasl_username=KAFKA_USER, kafka_sasl_password=KAFKA_PASSWORD,
        redis_acl_username=REDIS_USER, redis_acl_password=REDIS_PASSWORD,
    )
    stack = LocalStack(stack_settings, say=print)
    try:
        stack.up()
        settings = Settings(
            stack=stack_settings,
            kafka={"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": KAFKA_USER,
                   "sasl_password": KAFKA_PASSWORD, "partitions": 1},
            redis={"username": REDIS_USER, "password": REDIS_PASSWORD},
        )
        # The client default follows the stack to its SASL listener, not the PLAINTEXT one.
        assert settings.kafka.bootstrap_servers == f"{stack_settings.host}:{stack_settings.kafka_sasl_port}"
        created = create_topics(settings, timeout_s=30)  # the admin client, over SCRAM
        assert {state.name for state in created} == {spec.name.value for spec in TOPIC_SPECS}
        yield settings
    finally:
        stack.down()


def wrong_kafka_password(settings: Settings) -> Settings:
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"sasl_password": SecretStr("not-it")})})


def click(user: str, item: str) -> ClickEvent:
    return ClickEvent(event_id=str(uuid.uuid4()), user_id=user, item_id=item, ts=int(time.time() * 1000))


async def wait_for_profile(settings: Settings, user: str, timeout_s: float = 90) -> bytes:
    client = connect(settings.redis)  # the ACL user, through the factory
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            raw = await client.get(layout.profile_key(user))
            if raw is not None:
                return raw
            await asyncio.sleep(0.3)
        raise AssertionError(f"no profile for {user} within {timeout_s:.0f} s")
    finally:
        await client.aclose()


async def test_every_client_round_trips_over_scram_and_the_acl_user(secured, tmp_path):
    from serving.collector.app import create_app

    settings, run = secured, uuid.uuid4().hex[:8]
    sdk_user, http_user = f"sdk-{run}", f"http-{run}"
    reader = KafkaReader(settings.kafka, end_offsets(settings.kafka, [spec.name.value for spec in TOPIC_SPECS]))
    group = f"secured-streams-{run}"
    commit_groups_at_end(settings.kafka, {group: [t.value for t in (*INTERACTION_TOPICS, Topic.CATALOG)]})
    web_port = free_port()
    worker = ComponentProcess(["streams", "worker"], tmp_path / "streams.log", {
        **client_environment(settings),
        "STREAMREC_STREAMS__APP_ID": group, "STREAMREC_STREAMS__WEB_PORT": str(web_port),
        "STREAMREC_STREAMS__AGENTS": '["interactions"]',  # the catalog agent would need Triton
    }).start()
    try:
        # The SDK producer.
        with EventProducer.from_settings(settings) as producer:
            future = producer.send(click(sdk_user, "sdk-item"))
            producer.flush()
        delivered = future.result(timeout=5)
        assert delivered.ok and delivered.topic == Topic.CLICKS.value

        # The collector: its producer and its health check's admin client.
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://collector") as http:
                posted = await http.post("/v1/events", json=[click(http_user, "http-item").model_dump(mode="json")])
                health = await http.get("/healthz")
        assert posted.status_code == 202, posted.text
        assert health.status_code == 200, health.text

        # The Faust worker read both over SCRAM, wrote the profiles as the ACL user and published over SCRAM.
        worker.wait_http(f"http://127.0.0.1:{web_port}/metrics", timeout_s=60)
        for user in (sdk_user, http_user):
            assert await wait_for_profile(settings, user)
        updates = reader.read(Topic.PROFILES_UPDATED.value, match=lambda m: m.get("user_id") in (sdk_user, http_user),
                              expected=2, timeout_s=30, settle_s=0.2)
        assert {m["user_id"] for m in updates} == {sdk_user, http_user}
    finally:
        worker.stop()

    # The trainer's consumer reads what the worker accepted.
    from trainer.incremental import consume

    batch = consume.read_new_events(settings.kafka, f"secured-trainer-{run}", None, max_events=10_000)
    assert {sdk_user, http_user} <= {event.user_id for event in batch.events}

    # The lag reader (admin client and record-timestamp consumer) sees the worker's group caught up.
    lag = LagReader(settings.kafka)
    try:
        rows = [row for row in lag.read([group], sample_s=0) if row.topic == Topic.CLICKS.value]
    finally:
        lag.close()
    assert rows and all(row.lag == 0 for row in rows), rows

    # Redis through the factory: the ACL user reads and writes; no login is refused.
    client = connect_blocking(settings.redis)
    try:
        client.set(f"secured:{run}", b"kept")
        assert client.get(f"secured:{run}") == b"kept"
    finally:
        client.close()
    anonymous = connect_blocking(RedisSettings(url=settings.redis.url))
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()


def test_the_replay_command_produces_over_scram(secured, data_dir, tmp_path):
    before = end_offsets(secured.kafka, [Topic.CATALOG.value])
    result = subprocess.run([*STREAMREC, "replay", "amazon_scientific", "--limit", "20", "--data-dir", str(data_dir)],
                            env=client_environment(secured), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "replayed" in result.stdout and " 20 events" in result.stdout
    after = end_offsets(secured.kafka, [Topic.CATALOG.value])
    assert sum(after.values()) > sum(before.values())


def test_a_wrong_kafka_password_is_a_clear_error_within_seconds(secured):
    started = time.monotonic()
    with pytest.raises(PreflightError) as refused:
        check_kafka(wrong_kafka_password(secured).kafka, timeout_s=30)
    assert time.monotonic() - started < 10
    message = str(refused.value)
    assert f"refused the SASL credentials for user {KAFKA_USER!r}" in message
    assert "STREAMREC_KAFKA__SASL_USERNAME" in message and "STREAMREC_KAFKA__SASL_PASSWORD" in message
    assert KAFKA_PASSWORD not in message and "not-it" not in message

    # The same from the command line: exit 1 with that message, no retrying.
    env = {**client_environment(secured), "STREAMREC_KAFKA__SASL_PASSWORD": "not-it", "STREAMREC_KAFKA__PREFLIGHT_TIMEOUT_S": "60"}
    started = time.monotonic()
    result = subprocess.run([*STREAMREC, "topics", "create"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - started < 30
    output = " ".join(result.stdout.split())
    assert "refused the SASL credentials" in output and "STREAMREC_KAFKA__SASL_PASSWORD" in output


def test_a_client_without_a_login_or_on_the_wrong_listener_is_told_so(secured):
    plaintext_client = secured.kafka.model_copy(update={"security_protocol": "PLAINTEXT", "sasl_username": None, "sasl_password": None})
    started = time.monotonic()
    with pytest.raises(PreflightError, match="(?s)did not answer within 2 s.*STREAMREC_KAFKA__SECURITY_PROTOCOL \\(PLAINTEXT\\)"):
        check_kafka(plaintext_client, timeout_s=2)
    assert time.monotonic() - started < 6
    plaintext_listener = secured.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{secured.stack.kafka_port}"})
    with pytest.raises(PreflightError, match="(?s)does not speak SASL.*STREAMREC_KAFKA__BOOTSTRAP_SERVERS"):
        check_kafka(plaintext_listener, timeout_s=30)
    anonymous = RedisSettings(url=secured.redis.url)
    with pytest.raises(PreflightError, match="(?s)requires a login.*STREAMREC_REDIS__USERNAME"):
        check_redis(anonymous, timeout_s=5)


def test_a_wrong_redis_password_is_a_clear_error_within_seconds(secured, tmp_path):
    wrong = secured.redis.model_copy(update={"password": SecretStr("not-it")})
    started = time.monotonic()
    with pytest.raises(PreflightError) as refused:
        check_redis(wrong, timeout_s=30)
    assert time.monotonic() - started < 5
    message = str(refused.value)
    assert f"refused the login of user {REDIS_USER!r}" in message and "STREAMREC_REDIS__PASSWORD" in message
    assert "not-it" not in message

    # A worker with that password exits at start instead of retrying its first batch forever.
    env = {**client_environment(secured), "STREAMREC_REDIS__PASSWORD": "not-it", "STREAMREC_STREAMS__AGENTS": '["interactions"]',
           "STREAMREC_STREAMS__WEB_PORT": str(free_port())}
    started = time.monotonic()
    result = subprocess.run([*STREAMREC, "streams", "worker"], env=env, capture_output=True, text=True, timeout=90)
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - started < 60
    output = " ".join(result.stdout.split())
    assert "refused the login of user" in output and "STREAMREC_REDIS__PASSWORD" in output


# ---------------------------------------------------------------- the translations, no services


def test_client_config_carries_the_listeners_security():
    kafka = KafkaSettings(bootstrap_servers="k1:9094,k2:9094", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
                          sasl_username="svc", sasl_password="pw", ssl_ca_file=Path("/etc/ca.pem"),
                          ssl_cert_file=Path("/etc/c.pem"), ssl_key_file=Path("/etc/k.pem"), ssl_key_password="kp")
    config = client_config(kafka, client="trainer")
    assert config.pop("bootstrap.servers") == "k1:9094,k2:9094"
    assert config == {
        "client.id": "streamrec-trainer", "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "svc", "sasl.password": "pw",
        "ssl.ca.location": "/etc/ca.pem", "ssl.certificate.location": "/etc/c.pem", "ssl.key.location": "/etc/k.pem",
        "ssl.key.password": "kp",
    }
    plain = KafkaSettings(bootstrap_servers="k:9092")
    config = client_config(plain, client="sdk")
    assert config.pop("bootstrap.servers") == "k:9092"
    assert config == {"client.id": "streamrec-sdk", "security.protocol": "PLAINTEXT"}
    assert broker_credentials(plain) is None


def test_faust_gets_scram_credentials():
    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    scram = KafkaSettings(bootstrap_servers="k:9094", security_protocol="SASL_PLAINTEXT", sasl_username="svc", sasl_password="pw")
    auth = credentials_to_aiokafka_auth(broker_credentials(scram))
    assert auth == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "svc",
                    "sasl_plain_password": "pw", "ssl_context": None}
    tls = KafkaSettings(bootstrap_servers="k:9093", security_protocol="SSL")
    credentials = broker_credentials(tls)
    assert isinstance(credentials, faust.SSLCredentials) and credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SSL"


def test_redis_settings_override_the_url():
    assert connection_options(RedisSettings(url="redis://cache:6379/2")) == ("redis://cache:6379/2", {})
    url, options = connection_options(RedisSettings(url="redis://old:pw@cache:6379/2", username="svc", password="n3w", tls=True,
                                                    ca_file=Path("/etc/ca.pem")))
    assert url == "rediss://cache:6379/2"
    assert options == {"password": "n3w", "username": "svc", "ssl_ca_certs": "/etc/ca.pem"}
    url, options = connection_options(RedisSettings(url="redis://app%40shop:old@cache:6379/0", password="n3w"))
    assert (url, options) == ("redis://cache:6379/0", {"password": "n3w", "username": "app@shop"})
    client = connect_blocking(RedisSettings(url="redis://cache:6379/3", username="svc", password="pw"))
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["db"], kwargs["username"], kwargs["password"]) == ("cache", 3, "svc", "pw")
    client.close()
