"""The collector while its Kafka broker is stopped (SIGTERM) and started again.

A Kafka of the test's own (a stack with only Kafka, on free ports), the collector app in-process
(lifespan included) with a 3 s delivery timeout, batches posted all along: every answer is 202
or 503 (never another 5xx), and after the restart every event answered ``accepted`` is on its
topic exactly once (the producer is idempotent: its own retries never write a record twice).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import httpx
import orjson
from confluent_kafka import Consumer, TopicPartition

from serving.collector.app import create_app
from streamrec.kafka_admin import create_topics, end_offsets
from streamrec.kafka_client import client_config
from streamrec.settings import CollectorSettings, KafkaSettings, Settings
from streamrec.stack import LocalStack
from streamrec.stack.isolated import isolated_stack_settings
from streamrec.topics import Topic


def clicks(run: str, batch: int, size: int) -> list[dict]:
    now = int(time.time() * 1000)
    return [{"type": "click", "event_id": str(uuid.uuid4()), "user_id": f"{run}-u{(batch * size + n) % 7}",
             "item_id": f"i{n}", "ts": now} for n in range(size)]


def clicks_on_topic(kafka: KafkaSettings, run: str) -> Counter:
    """event_id -> records on ``events.clicks`` (from the log start) of this run's users."""
    ends = end_offsets(kafka, [Topic.CLICKS.value])
    consumer = Consumer({**client_config(kafka, client=f"kafka-down-{run}"), "group.id": f"kafka-down-{run}", "enable.auto.commit": False})
    found: Counter = Counter()
    try:
        pending = {tp for tp, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(*tp, 0) for tp in pending])
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is None or message.error():
                continue
            value = orjson.loads(message.value())
            if value["user_id"].startswith(run):
                found[value["event_id"]] += 1
            if message.offset() + 1 >= ends[(message.topic(), message.partition())]:
                pending.discard((message.topic(), message.partition()))
        assert not pending, f"timed out reading {sorted(pending)}"
    finally:
        consumer.close()
    return found


async def test_broker_stopped_and_restarted_answers_only_202_or_503_and_loses_nothing(tmp_path):
    stack = LocalStack(isolated_stack_settings(tmp_path / "state", services=["kafka"]))
    kafka = stack.service("kafka")
    run = f"down-{uuid.uuid4().hex[:6]}"
    answers: Counter = Counter()
    accepted: set[str] = set()
    try:
        stack.up()
        settings = Settings(stack=stack.settings)
        create_topics(settings)
        settings = settings.model_copy(update={"collector": CollectorSettings(delivery_timeout_s=3.0)})
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://collector", timeout=30) as client:
                batches = 0

                async def post_for(seconds: float) -> None:
                    nonlocal batches
                    until = time.monotonic() + seconds
                    while time.monotonic() < until:
                        events = clicks(run, batches, 10)
                        batches += 1
                        response = await client.post("/v1/events", content=orjson.dumps(events))
                        answers[response.status_code] += 1
                        if response.status_code == 202:
                            results = response.json()["results"]
                            assert all(result["status"] == "accepted" for result in results), results
                            accepted.update(result["event_id"] for result in results)
                        await asyncio.sleep(0.1)

                await post_for(2)
                assert answers[202] > 0, answers
                stopping = asyncio.create_task(asyncio.to_thread(kafka.process().stop, 30))  # SIGTERM
                await post_for(8)  # during the broker's shutdown and while it is down
                assert await stopping == "stopped"
                assert answers[503] > 0, f"no 503 while the broker was down: {answers}"
                await asyncio.to_thread(stack.up)
                acknowledged_before = answers[202]
                deadline = time.monotonic() + 60
                while answers[202] < acknowledged_before + 5 and time.monotonic() < deadline:
                    await post_for(1)  # until the producer is back on the restarted broker
        assert set(answers) <= {202, 503}, f"answers other than 202/503: {answers}"
        assert answers[202] >= acknowledged_before + 5, f"the collector did not recover: {answers}"
        on_topic = clicks_on_topic(settings.kafka, run)
        assert not accepted - set(on_topic), f"{len(accepted - set(on_topic))} accepted events are not on the topic"
        twice = {event_id for event_id in accepted if on_topic[event_id] != 1}
        assert not twice, f"{len(twice)} accepted events are on the topic more than once"
    finally:
        stack.down()
