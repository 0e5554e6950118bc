"""Topic administration through confluent-kafka's AdminClient.

``create_topics`` is idempotent: existing topics are left alone (their
partition count is reported, never silently changed). ``message_counts`` reads
watermark offsets, which is what operators and the quick-start print.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.kafka_client import client_config
from streamrec.settings import KafkaSettings, Settings
from streamrec.topics import TOPIC_SPECS, TopicSpec


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: int
    created: bool


def admin_client(kafka: KafkaSettings, *, client: str = "admin") -> AdminClient:
    return AdminClient(client_config(kafka, client=client))


def create_topics(
    settings: Settings, specs: tuple[TopicSpec, ...] = TOPIC_SPECS, timeout_s: float = 30.0
) -> list[TopicState]:
    admin = admin_client(settings.kafka)
    existing = admin.list_topics(timeout=timeout_s).topics
    wanted = [
        NewTopic(
            spec.name.value,
            num_partitions=settings.kafka.partitions,
            replication_factor=settings.kafka.replication_factor,
            config=spec.kafka_config(),
        )
        for spec in specs
        if spec.name.value not in existing
    ]
    created: set[str] = set()
    if wanted:
        for name, future in admin.create_topics(wanted, operation_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
                created.add(name)
            except KafkaException as error:
                # Another process created it between our listing and our request: fine.
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    topics = _wait_listed(admin, [spec.name.value for spec in specs], timeout_s)
    return [
        TopicState(spec.name.value, len(topics[spec.name.value].partitions), spec.name.value in created)
        for spec in specs
    ]


def _wait_listed(admin: AdminClient, names: list[str], timeout_s: float) -> dict:
    """Topic metadata once every name is listed (a just-created topic takes a moment to appear)."""
    deadline = time.monotonic() + timeout_s
    while True:
        topics = admin.list_topics(timeout=timeout_s).topics
        missing = [name for name in names if name not in topics or not topics[name].partitions]
        if not missing:
            return topics
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not visible after {timeout_s:.0f} s: {', '.join(missing)}")
        time.sleep(0.1)


def message_counts(settings: Settings, topics: list[str], timeout_s: float = 10.0) -> dict[str, int]:
    """Messages currently retained per topic (sum of high minus low watermarks)."""
    consumer = Consumer(
        {**client_config(settings.kafka, client="watermarks"), "group.id": "streamrec-watermarks", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(timeout=timeout_s).topics
        counts: dict[str, int] = {}
        for topic in topics:
            if topic not in metadata:
                counts[topic] = 0
                continue
            total = 0
            for partition in metadata[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
                total += high - low
            counts[topic] = total
        return counts
    finally:
        consumer.close()


def end_offsets(kafka: KafkaSettings, topics: list[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> current log-end offset: "now" on those topics, to start a group from."""
    consumer = Consumer({**client_config(kafka, client="offsets"), "group.id": "offsets-probe", "enable.auto.commit": False})
    try:
        ends = {}
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=10)
            for partition in metadata.topics[topic].partitions:
                ends[(topic, partition)] = _watermark(consumer, TopicPartition(topic, partition))[1]
        return ends
    finally:
        consumer.close()


def commit_group_offsets(kafka: KafkaSettings, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Set where ``group`` starts reading (it must have no active members)."""
    admin = admin_client(kafka)
    partitions = [TopicPartition(topic, partition, offset) for (topic, partition), offset in sorted(offsets.items())]
    for future in admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, partitions)]).values():
        future.result(timeout=30)


def commit_groups_at_end(kafka: KafkaSettings, groups: dict[str, list[str]]) -> None:
    """Commit each group's offsets at the current end of its topics.

    A component started under such a group reads only what is produced from now on, with no
    race against its group join (tests and benchmarks share topics with earlier runs).
    """
    for group, topics in groups.items():
        commit_group_offsets(kafka, group, end_offsets(kafka, topics))


def _watermark(consumer: Consumer, partition: TopicPartition, timeout_s: float = 30) -> tuple[int, int]:
    """High watermark, retried: a topic created moments ago may not have a leader yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return consumer.get_watermark_offsets(partition, timeout=10)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
