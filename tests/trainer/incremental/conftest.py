"""Trainer fixtures: a sequence model of the trainer's own in the session's real Triton, real Amazon
Scientific items (with their MiniLM text embeddings) in Redis's catalog, and real purchase
sequences sent as raw events through a real streams worker, so the trainer reads them from
``events.accepted`` as in production.

The model is a copy of ``bert_scorer``'s config under another name, not following the catalog
(so what it serves is exactly what the trainer published), so publishing, rolling back and
breaking versions here never changes what the other tests' models serve. Its version 1 is an
untrained tiny sequence model over the first ``KNOWN_ITEMS`` Amazon items: events of the other
items make the trainer append them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition

from streamrec.components import ComponentProcess
from streamrec.datasets.amazon_pairs import FOLDER, VALID_FILE, load_catalog, load_examples
from streamrec.events import ClickEvent, PurchaseEvent
from streamrec.kafka_admin import commit_groups_at_end
from streamrec.kafka_client import client_config
from streamrec.lag import LagReader
from streamrec.model import contract
from streamrec.model.artifacts import VersionMetadata, publish_sequence
from streamrec.model.bootstrap import first_sequence_model
from streamrec.model.registry import ModelRegistry
from streamrec.producer import EventProducer
from streamrec.settings import REPO_ROOT, Settings, StreamsSettings, TrainerSettings
from streamrec.stack.isolated import stack_environment
from streamrec.stack.process import free_port
from streamrec.store.catalog import CatalogRecord
from streamrec.store.catalog_store import CatalogStore
from streamrec.store.connection import connect
from streamrec.topics import INTERACTION_TOPICS, Topic
from trainer.incremental import consume
from trainer.offline.sequence_train import text_vectors

DAY_MS = 86_400_000
# The rules of the trainer tests' streams worker: the sequences below are spread over the last
# 30 days (so a late-event limit of 90 days), and a bot burst is a few clicks, not 30.
STREAMS_RULES = StreamsSettings(max_late_s=90 * 86400, bot_max_clicks=5, bot_window_s=10.0)
WORKER_TOPICS = (*INTERACTION_TOPICS, Topic.CATALOG)
KNOWN_ITEMS = 300
"""Items version 1 knows (the first of the Amazon catalog); the rest are new to it."""


def trainer_settings(settings: Settings, model: str, **overrides) -> Settings:
    """Small, fast cycles for tests (one epoch), on the session's model repository, with the
    recommender's scorer set to the same model (as the settings' cross-check requires). The gate
    lets any finite challenger through unless a test sets ``gate_se``."""
    options = dict(model=model, model_repo=settings.model_repo, min_events=20, epochs=1, batch_size=32, gate_se=1000.0,
                   keep_versions=3, load_timeout_s=120, replay_capacity=200, threads=1)
    return settings.model_copy(update={"trainer": TrainerSettings(**{**options, **overrides}),
                                       "recs": settings.recs.model_copy(update={"scorer_model": model})})


def log_ends(settings: Settings, topic: Topic = Topic.ACCEPTED) -> dict[str, int]:
    """``topic``'s current log-end offsets by ``"topic:partition"`` (for ``events.accepted``: what a
    new version has already seen)."""
    consumer = Consumer({**client_config(settings.kafka, client="test"), "group.id": "trainer-test-probe"})
    try:
        partitions = consumer.list_topics(topic.value, timeout=10).topics[topic.value].partitions
        return {consume.offset_key(topic.value, p): consume.watermarks(consumer, TopicPartition(topic.value, p))[1] for p in partitions}
    finally:
        consumer.close()


def read_since(settings: Settings, topic: Topic, since: dict[str, int]) -> list[tuple[bytes | None, bytes]]:
    """(key, value) of every message on ``topic`` after ``since`` (from :func:`log_ends`) up to today's log end."""
    ends = log_ends(settings, topic)
    consumer = Consumer({**client_config(settings.kafka, client="test"), "group.id": f"trainer-test-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    found: list[tuple[bytes | None, bytes]] = []
    try:
        pending = {key for key in ends if ends[key] > since.get(key, 0)}
        consumer.assign([TopicPartition(*consume.parse_key(key), since.get(key, 0)) for key in pending])
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            key = consume.offset_key(message.topic(), message.partition())
            if key in pending and message.offset() < ends[key]:
                found.append((message.key(), message.value()))
                if message.offset() + 1 >= ends[key]:
                    pending.discard(key)
        assert not pending, f"timed out reading {sorted(pending)}"
        return found
    finally:
        consumer.close()


@dataclass
class AcceptingWorker:
    """A real ``streamrec streams worker`` (both agents) with ``STREAMS_RULES``."""

    group: str
    process: ComponentProcess
    rules: StreamsSettings

    def wait_applied(self, settings: Settings, timeout_s: float = 180) -> None:
        """Until the worker committed past everything on the raw topics: every catalog item is
        then stored, and every event it accepted is on ``events.accepted`` (delivered before its
        Redis commit)."""
        topics = [t.value for t in WORKER_TOPICS]
        reader = LagReader(settings.kafka)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                assert self.process.alive(), self.process.log_tail()
                if sum(row.lag for row in reader.read([self.group], sample_s=0, topics=topics) if row.topic in topics) == 0:
                    return
                assert time.monotonic() < deadline, f"streams worker {self.group} did not catch up:\n{self.process.log_tail()}"
                time.sleep(0.5)
        finally:
            reader.close()


@pytest.fixture(scope="session")
def accepting_worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcceptingWorker]:
    """The trainer tests' streams worker: a group of its own starting at today's log ends, on the
    session's Redis (where ``amazon_catalog_in_redis`` puts the catalog, as the catalog agent would)."""
    group = f"trainer-streams-{uuid.uuid4().hex[:8]}"
    commit_groups_at_end(settings.kafka, {group: [t.value for t in WORKER_TOPICS]})
    env = {
        **stack_environment(settings.stack),
        "STREAMREC_STREAMS__APP_ID": group,
        "STREAMREC_STREAMS__WEB_PORT": str(free_port()),
        **{f"STREAMREC_STREAMS__{name.upper()}": str(getattr(STREAMS_RULES, name))
           for name in ("max_late_s", "bot_max_clicks", "bot_window_s")},
    }
    process = ComponentProcess(["streams", "worker"], tmp_path_factory.mktemp("streams") / "streams.log", env).start()
    try:
        yield AcceptingWorker(group, process, STREAMS_RULES)
    finally:
        process.stop()


def make_trainer_model(settings: Settings, name: str, amazon_text) -> ModelRegistry:
    """``<repo>/<name>``: ``bert_scorer``'s config renamed and not following the catalog, version 1
    an untrained tiny sequence model over the first ``KNOWN_ITEMS`` items with offsets at today's
    log ends, loaded in Triton."""
    (catalog, _), text = amazon_text
    repo = settings.stack.model_repo
    source = repo / contract.BERT_SCORER
    target = repo / name
    target.mkdir()
    config = (source / "config.pbtxt").read_text().replace(f'name: "{contract.BERT_SCORER}"', f'name: "{name}"')
    config = config.replace('key: "catalog_refresh_s" value: { string_value: "2" }', 'key: "catalog_refresh_s" value: { string_value: "0" }')
    assert 'string_value: "0"' in config
    (target / "config.pbtxt").write_text(config)
    served = first_sequence_model(list(catalog.item_ids[:KNOWN_ITEMS]), text[:KNOWN_ITEMS].numpy(), [], tiny=True)
    metadata = VersionMetadata(kind="sequence", base="untrained (tests)", max_length=served.max_history,
                               lineage={"untrained": True, "offsets": log_ends(settings)})
    publish_sequence(repo, name, served, metadata, version=1)
    registry = ModelRegistry(repo, name, settings.triton.grpc_url or "", load_timeout_s=120, say=print)
    registry.activate(1)
    return registry


@pytest.fixture(scope="session")
def amazon(data_dir: Path):
    return load_catalog(data_dir), load_examples(data_dir / FOLDER / VALID_FILE)


@pytest.fixture(scope="session")
def amazon_text(amazon):
    """The Amazon data and its items' MiniLM text embeddings (cached in ``.cache/text``)."""
    catalog, _ = amazon
    return amazon, text_vectors(catalog.texts, REPO_ROOT / ".cache" / "text")


@pytest.fixture(scope="session")
def amazon_catalog_in_redis(settings: Settings, amazon_text) -> None:
    """Every Amazon Scientific item in the Redis catalog with its text embedding, as the streams
    worker writes it (the item encoder's float16 unit vectors)."""
    (catalog, _), vectors = amazon_text
    now = int(time.time() * 1000)
    records = []
    for item_id, title, text, vector in zip(catalog.item_ids, catalog.titles, catalog.texts, vectors.numpy(), strict=True):
        parts = text.split(". ")
        category = parts[1].split(" > ") if len(parts) > 1 and " > " in parts[1] else []
        records.append(CatalogRecord(item_id, title, tuple(category), None, None, None, True, now,
                                     embedding=(vector / np.linalg.norm(vector)).astype(np.float16)))

    async def write() -> None:
        client = connect(settings.redis)
        try:
            await CatalogStore(client).write(records, stored_at_ms=now)
        finally:
            await client.aclose()

    asyncio.run(write())


@pytest.fixture
def send_sequences(settings: Settings, amazon, amazon_catalog_in_redis, accepting_worker) -> Callable[[int, int], int]:
    """``send(first_user, users)``: those users' real sequences as clicks then a purchase each, through
    the streams worker onto ``events.accepted``; returns events sent (all of them are accepted)."""
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
        accepting_worker.wait_applied(settings)
        return sent

    return send
