"""The Faust app both workers (streams, recs) are built on: one copy of the broker settings.

Raw bytes in and out (the event contract parses them), topics owned by `streamrec topics create`
(never declared by a worker), ``acks=all``, offsets committed every second, and a heartbeat at a
quarter of the session timeout so that a killed worker's partitions move within that timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import faust

from streamrec.settings import Settings


def broker_url(bootstrap_servers: str) -> str:
    """``host:port,host:port`` → Faust's ``kafka://host:port;kafka://host:port``."""
    return ";".join(f"kafka://{server.strip()}" for server in bootstrap_servers.split(","))


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


async def send_all(app: faust.App, messages: list[tuple[str, bytes | None, bytes]]) -> None:
    """Send ``(topic, key, value)`` messages through the app's producer and return once Kafka
    acknowledged every one (a worker delivers before it lets its batch be committed)."""
    producer = app.producer
    pending = [await producer.send(topic, key, value, None, None, None) for topic, key, value in messages]
    await asyncio.gather(*pending)
