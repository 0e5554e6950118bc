"""The end-to-end canary: a synthetic user's click in through the collector, its list out on Kafka.

Every interval the canary posts one click for its reserved user (``streamrec.events``'s canary
prefix: the streams worker builds its profile but leaves item statistics alone, and the trainer
never learns from it) and waits for a list on ``recommendations`` that reflects that click
(``source_event_ts`` equal to the click's ``ts``). The time from the POST to that record's
timestamp is the whole pipeline's freshness as a shop sees it; no list within the timeout is a
failure. When the collector needs keys, the canary posts with ``ops.canary_key`` (or the
bootstrap admin key). A background thread tails ``recommendations`` and looks only at records
keyed by the canary user, so a busy topic costs a key comparison per record.

A canary-keyed record that breaks the ``recommendations`` contract is counted through
``on_unreadable`` (``streamrec_ops_unreadable_records{topic}``), logged and skipped: the probe
then fails for want of a list, which is what it should report. Not dead-lettered: the tail reads
only the probe's own lists, so other users' records are not its to judge.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from streamrec.events import CANARY_USER_PREFIX
from streamrec.kafka_client import client_config
from streamrec.messages import Recommendations, UnreadableMessage
from streamrec.settings import KafkaSettings
from streamrec.topics import Topic

log = logging.getLogger(__name__)
OnUnreadable = Callable[[str, str], None]
"""``(topic, reason)`` for each record that could not be read."""


@dataclass(frozen=True)
class CanaryResult:
    at: float
    ok: bool
    seconds: float | None  # POST to the list's record timestamp
    detail: str
    degraded: bool | None = None


class RecommendationsTail:
    """Follows ``recommendations`` from its end; remembers the canary user's lists by source event ts."""

    def __init__(self, kafka: KafkaSettings, user_id: str, on_unreadable: OnUnreadable | None = None) -> None:
        self._key = user_id.encode()
        self._on_unreadable = on_unreadable or (lambda topic, reason: None)
        self._consumer = Consumer({
            **client_config(kafka, client="ops-canary"), "group.id": f"streamrec-lag-canary-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False, "fetch.wait.max.ms": 50,
        })
        self._seen: dict[int, tuple[float, bool]] = {}  # source_event_ts -> (record ts s, degraded)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canary-tail", daemon=True)
        self.ready = threading.Event()
        self.last_item: str | None = None  # first item of the canary's newest list: the next click

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():  # Kafka may be away when the service starts: keep trying
            try:
                metadata = self._consumer.list_topics(Topic.RECOMMENDATIONS.value, timeout=10)
                partitions = metadata.topics[Topic.RECOMMENDATIONS.value].partitions
                if partitions:
                    break
            except KafkaException:
                pass
            self._stop.wait(2)
        else:
            self._consumer.close()
            return
        self._consumer.assign([TopicPartition(Topic.RECOMMENDATIONS.value, p, OFFSET_END) for p in partitions])
        self.ready.set()
        while not self._stop.is_set():
            for message in self._consumer.consume(num_messages=1000, timeout=0.2):
                if message.error() or message.key() != self._key:
                    continue
                try:
                    listing = Recommendations.decode(message.value())
                except UnreadableMessage as error:
                    self._on_unreadable(message.topic(), error.reason)
                    log.warning("unreadable canary list at %s:%d@%d: %s", message.topic(), message.partition(),
                                message.offset(), error.reason)
                    continue
                if listing.items:
                    self.last_item = listing.items[0].item_id
                if listing.source_event_ts is not None:
                    with self._lock:
                        self._seen[listing.source_event_ts] = (message.timestamp()[1] / 1000, listing.degraded)
                        while len(self._seen) > 64:
                            self._seen.pop(next(iter(self._seen)))
        self._consumer.close()

    def find(self, source_event_ts: int) -> tuple[float, bool] | None:
        with self._lock:
            return self._seen.get(source_event_ts)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


class Canary:
    def __init__(self, kafka: KafkaSettings, collector_url: str, timeout_s: float, item_id: str = "canary-item",
                 on_unreadable: OnUnreadable | None = None, *, key: str | None = None) -> None:
        self.user_id = f"{CANARY_USER_PREFIX}ops-{socket.gethostname()}"[:128]
        self.item_id = item_id
        self._collector_url = collector_url.rstrip("/")
        self._timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._tail = RecommendationsTail(kafka, self.user_id, on_unreadable)

    def start(self) -> None:
        self._tail.start()

    def stop(self) -> None:
        self._tail.stop()

    async def probe(self, client: httpx.AsyncClient) -> CanaryResult:
        await asyncio.to_thread(self._tail.ready.wait, 30)
        sent_at = time.time()
        ts = int(sent_at * 1000)
        # The first click names a placeholder item; later ones click the list's top item, as a shopper would.
        item_id = self._tail.last_item or self.item_id
        event = {"type": "click", "event_id": str(uuid.uuid4()), "user_id": self.user_id, "item_id": item_id, "ts": ts,
                 "context": {"page": "streamrec-ops-canary"}}
        try:
            response = await client.post(f"{self._collector_url}/v1/events", json=[event], headers=self._headers,
                                         timeout=self._timeout_s)
        except httpx.HTTPError as error:
            return CanaryResult(sent_at, False, None, f"collector unreachable: {type(error).__name__}")
        if response.status_code != 202:
            return CanaryResult(sent_at, False, None, f"collector answered {response.status_code}: {response.text[:200]}")
        deadline = sent_at + self._timeout_s
        while time.time() < deadline:
            found = self._tail.find(ts)
            if found is not None:
                published_at, degraded = found
                seconds = max(0.0, published_at - sent_at)
                return CanaryResult(sent_at, True, seconds, f"list on {Topic.RECOMMENDATIONS.value} after {seconds:.3f} s", degraded)
            await asyncio.sleep(0.02)
        return CanaryResult(sent_at, False, None, f"no list on {Topic.RECOMMENDATIONS.value} within {self._timeout_s:.0f} s")
