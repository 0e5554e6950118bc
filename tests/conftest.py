"""Session fixtures: one real local stack (Kafka, Redis, Triton) on free ports.

The test session runs its own stack through the same manager as ``streamrec up``,
with its own ports and state folder, so a developer's running stack is never
touched. Topics are shared by the session; each test gets its own reader
(``kafka_reader``: a consumer group of its own, starting at the offsets the topics
had when the test began) and writes events with its own ids, so it never sees
another test's messages from earlier, nor spends time reading past them.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from hypothesis import settings as hypothesis_settings

from streamrec.kafka_admin import create_topics, end_offsets
from streamrec.kafka_client import client_config
from streamrec.settings import REPO_ROOT, KafkaSettings, Settings, StackSettings
from streamrec.stack import LocalStack
from streamrec.stack.isolated import isolated_stack_settings
from streamrec.topics import TOPIC_SPECS

DATA_DIR = REPO_ROOT.parent / "shared" / "data"

# Property tests: on CI (CI=true) the same examples every run and no example database written; on a
# developer's machine new examples each run, with the failures found kept in .hypothesis/ (ignored).
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("dev")
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")


def tiny_catalog(items: int = 60, users: int = 80, seed: int = 0) -> tuple[list[str], np.ndarray, list[list[str]]]:
    """Item ids (odd ones among them), unit text vectors and users' item sequences for a tiny
    sequence scorer; deterministic, so a test can rebuild exactly what the session serves."""
    rng = np.random.default_rng(seed)
    ids = [f"seq-item-{n}" for n in range(items - 3)] + ["kcat\"q", "Jürgen-ß", "🛒item"]
    text = rng.normal(size=(items, 384)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    sequences = [[ids[j] for j in rng.integers(0, items, rng.integers(2, 12))] for _ in range(users)]
    return ids, text, sequences


def make_model_repo(target: Path) -> Path:
    """A model repository with the project's configs and tiny versions (fast to load)."""
    from streamrec.model.bootstrap import init_item_encoder, init_scorers, init_sequence_scorer

    for config in (REPO_ROOT / "model_repo").glob("*/config.pbtxt"):
        destination = target / config.parent.name
        destination.mkdir(parents=True, exist_ok=True)
        shutil.copy2(config, destination / "config.pbtxt")
    init_item_encoder(target, tiny=True)
    init_scorers(target, tiny=True)
    init_sequence_scorer(target, *tiny_catalog(), tiny=True)
    return target


SESSION_MODELS = ["item_encoder", "bert_scorer", "cross_encoder", "cross_encoder_student"]


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> StackSettings:
    root = tmp_path_factory.mktemp("stack")
    # Four Python-backend models load in about 40 s on an idle 2-core machine and well past the
    # default 90 s health deadline when other work shares the cores; a slow start is not a failure.
    return isolated_stack_settings(
        root / "state", model_repo=make_model_repo(root / "model_repo"), triton_load_models=SESSION_MODELS,
        start_timeout_s=300,
    )


@pytest.fixture(scope="session")
def local_stack(stack_settings: StackSettings) -> Iterator[LocalStack]:
    stack = LocalStack(stack_settings, say=print)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def settings(local_stack: LocalStack) -> Settings:
    """Settings whose clients point at the session's stack, with topics created."""
    settings = Settings(stack=local_stack.settings)
    create_topics(settings)
    return settings


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.exists():
        pytest.skip(f"shared datasets not found at {DATA_DIR} (see DEVELOPERS.md: ../shared/data)")
    return DATA_DIR


class KafkaReader:
    """Reads topics from given start offsets with a consumer group of its own and keeps what matches."""

    def __init__(self, kafka: KafkaSettings, start: dict[tuple[str, int], int]) -> None:
        self._kafka = kafka
        self._start = start
        self.group = f"test-reader-{uuid.uuid4()}"

    def read(
        self,
        topic: str,
        *,
        match: Callable[[dict], bool],
        expected: int,
        timeout_s: float = 30.0,
        settle_s: float = 1.0,
    ) -> list[dict]:
        """Messages (decoded JSON plus ``_key``/``_partition``) that satisfy ``match``.

        Waits until ``expected`` matches arrived, then ``settle_s`` more to catch any
        extra (duplicate) messages, so callers can assert exact counts.
        """
        consumer = Consumer(
            {
                **client_config(self._kafka, client="test-reader"),
                "group.id": self.group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        found: list[dict] = []
        try:
            metadata = consumer.list_topics(topic, timeout=10)
            partitions = [TopicPartition(topic, p, self._start.get((topic, p), 0)) for p in metadata.topics[topic].partitions]
            consumer.assign(partitions)
            deadline = time.monotonic() + timeout_s
            settle_until: float | None = None
            while time.monotonic() < deadline:
                if settle_until is not None and time.monotonic() > settle_until:
                    break
                message = consumer.poll(0.2)
                if message is None or message.error():
                    continue
                try:
                    value = orjson.loads(message.value())
                except orjson.JSONDecodeError:
                    continue
                if isinstance(value, dict) and match(value):
                    value["_key"] = message.key().decode() if message.key() else None
                    value["_partition"] = message.partition()
                    found.append(value)
                    if len(found) >= expected and settle_until is None:
                        settle_until = time.monotonic() + settle_s
            return found
        finally:
            consumer.close()


@pytest.fixture
def kafka_reader(settings: Settings) -> KafkaReader:
    """A reader of every topic from where it ended when the test started."""
    return KafkaReader(settings.kafka, end_offsets(settings.kafka, [spec.name.value for spec in TOPIC_SPECS]))

