"""Trainer fixtures: a scorer model of the trainer's own in the session's real Triton, real Amazon
Scientific items in Redis's catalog and real purchase sequences as events in Kafka.

The model is a copy of ``bert_scorer_student``'s config under another name, so publishing,
rolling back and breaking versions here never changes what the other tests' models serve.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as redis

from streamrec.datasets.amazon_pairs import FOLDER, VALID_FILE, load_catalog, load_examples
from streamrec.events import ClickEvent, PurchaseEvent
from streamrec.model import contract
from streamrec.model.artifacts import read_metadata
from streamrec.model.registry import ModelRegistry
from streamrec.producer import EventProducer
from streamrec.settings import Settings, TrainerSettings
from streamrec.store.catalog import CatalogRecord
from streamrec.store.catalog_store import CatalogStore
from trainer.incremental import consume

DAY_MS = 86_400_000


def trainer_settings(settings: Settings, model: str, **overrides) -> Settings:
    """Small, fast cycles for tests (tiny model, few steps)."""
    options = dict(model=model, min_events=20, steps=8, batch_size=8, max_length=32, eval_candidates=20,
                   gate_tolerance=1.0, keep_versions=3, load_timeout_s=120, replay_capacity=200, threads=1)
    return settings.model_copy(update={"trainer": TrainerSettings(**{**options, **overrides})})


def log_ends(settings: Settings) -> dict[str, int]:
    """The interaction topics' current log-end offsets (what a new version has already seen)."""
    from confluent_kafka import Consumer, TopicPartition

    from streamrec.topics import INTERACTION_TOPICS

    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "trainer-test-probe"})
    try:
        topics = consumer.list_topics(timeout=10).topics
        return {
            consume.offset_key(topic.value, p): consume.watermarks(consumer, TopicPartition(topic.value, p))[1]
            for topic in INTERACTION_TOPICS for p in topics[topic.value].partitions
        }
    finally:
        consumer.close()


def make_trainer_model(settings: Settings, name: str) -> ModelRegistry:
    """``<repo>/<name>``: the student's config renamed, version 1 = the student's version 1 with
    offsets at today's log ends, loaded in Triton."""
    import shutil

    repo = settings.stack.model_repo
    source = repo / contract.BERT_SCORER_STUDENT
    target = repo / name
    target.mkdir()
    config = (source / "config.pbtxt").read_text().replace(f'name: "{contract.BERT_SCORER_STUDENT}"', f'name: "{name}"')
    (target / "config.pbtxt").write_text(config)
    staging = repo / f".copy-{name}"
    shutil.copytree(source / "1", staging)
    metadata = read_metadata(staging)
    metadata.lineage = {**metadata.lineage, "offsets": log_ends(settings)}
    (staging / "metadata.json").write_text(metadata.to_json())
    staging.rename(target / "1")
    registry = ModelRegistry(repo, name, settings.triton.grpc_url or "", load_timeout_s=120, say=print)
    registry.activate(1)
    return registry


@pytest.fixture(scope="session")
def amazon(data_dir: Path):
    return load_catalog(data_dir), load_examples(data_dir / FOLDER / VALID_FILE)


@pytest.fixture(scope="session")
def amazon_catalog_in_redis(settings: Settings, amazon) -> None:
    """Every Amazon Scientific item in the Redis catalog, as the streams worker writes it."""
    catalog, _ = amazon
    now = int(time.time() * 1000)
    records = []
    for item_id, title, text in zip(catalog.item_ids, catalog.titles, catalog.texts):
        parts = text.split(". ")
        category = parts[1].split(" > ") if len(parts) > 1 and " > " in parts[1] else []
        records.append(CatalogRecord(item_id, title, tuple(category), None, None, None, True, now))

    async def write() -> None:
        client = redis.Redis.from_url(settings.redis_url)
        try:
            await CatalogStore(client).write(records, stored_at_ms=now)
        finally:
            await client.aclose()

    asyncio.run(write())


@pytest.fixture
def send_sequences(settings: Settings, amazon, amazon_catalog_in_redis) -> Callable[[int, int], int]:
    """``send(first_user, users)``: those users' real sequences as clicks then a purchase each; returns events sent."""
    catalog, examples = amazon

    def send(first_user: int, users: int, *, tag: str = "") -> int:
        tag = tag or uuid.uuid4().hex[:6]
        base = int(time.time() * 1000) - 30 * DAY_MS
        sent = 0
        with EventProducer.from_settings(settings) as producer:
            for row in examples[first_user : first_user + users]:
                sequence = (*row.history, row.target)
                for position, index in enumerate(sequence):
                    common = dict(user_id=f"tr-{tag}-{row.user}", item_id=catalog.item_ids[index],
                                  ts=base + position * DAY_MS // 24 + int(row.user) * 10)
                    last = position == len(sequence) - 1
                    producer.produce(PurchaseEvent(order_id=f"o-{tag}-{row.user}", **common) if last else ClickEvent(**common))
                    sent += 1
            producer.flush()
        return sent

    return send
