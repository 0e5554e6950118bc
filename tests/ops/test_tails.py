"""The operations service's tails on the session's real Kafka, fed garbage straight into the topics
they read: ``events.dlq``, ``events.quarantine`` and ``model.updates`` (the page's examples) and
``recommendations`` (the canary). Each unreadable record is counted on the service's metrics and
shown or skipped with why; the tail threads stay alive and read the good record sent after it."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from serving.ops.canary import RecommendationsTail
from serving.ops.service import OpsService
from streamrec.deadletter import DeadLetter
from streamrec.events import ClickEvent, encode
from streamrec.messages import ModelUpdate, QuarantinedEvent, Recommendations
from streamrec.topics import Topic
from tests import garbage

pytestmark = pytest.mark.stack

COUNTER = "streamrec_ops_unreadable_records_total"


def good_record(topic: Topic, marker: str) -> bytes:
    if topic is Topic.DLQ:
        return DeadLetter.wrap(marker.encode(), reason=f"good letter {marker}", source="test", max_raw_bytes=1024).encode()
    if topic is Topic.QUARANTINE:
        event = ClickEvent(user_id=marker, item_id="i")
        return QuarantinedEvent(rule="duplicate", reason=f"good {marker}", event=event, topic="events.clicks", partition=0,
                                offset=1).encode()
    return ModelUpdate(event="published", model=marker, version=2).encode()


def wrong_type(topic: Topic, marker: str) -> bytes:
    """A record of another topic's contract: valid JSON, the wrong shape for this one."""
    return encode(ClickEvent(user_id=marker, item_id=marker)) if topic is not Topic.DLQ else \
        ModelUpdate(event="published", model=marker, version=1).encode()


def wait_until(predicate, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_the_page_tails_show_garbage_as_unreadable_count_it_and_read_on(settings):
    marker = uuid.uuid4().hex
    tailed = (Topic.DLQ, Topic.QUARANTINE, Topic.MODEL_UPDATES)
    sent = {topic: garbage.kinds(marker, wrong_type(topic, marker)) for topic in tailed}
    for topic in tailed:
        garbage.produce(settings, topic.value, [*((None, value) for value in sent[topic].values()),
                                                (None, good_record(topic, marker))])
    service = OpsService(settings)  # its tail starts a little before each topic's end: these records included
    service.tail.start()
    try:
        def good_seen(topic: Topic) -> bool:
            return any(marker in orjson.dumps(record["value"]).decode() and "unreadable" not in record["value"]
                       for record in service.tail.newest(topic, 200))

        for topic in tailed:
            wait_until(lambda topic=topic: good_seen(topic), f"the good record on {topic.value}")
            shown = [record["value"] for record in service.tail.newest(topic, 200) if "unreadable" in record["value"]]
            reasons = [value["reason"] for value in shown]
            assert "no value (a tombstone)" in reasons
            assert sum(reason.startswith(f"breaks the {topic.value} contract: ") for reason in reasons) >= len(sent[topic]) - 1
            assert any(marker in value["unreadable"] for value in shown)  # the first bytes, to recognise it by
            counted = service.metrics.registry.get_sample_value(COUNTER, {"topic": topic.value})
            assert counted >= len(sent[topic]), (topic, counted)
        assert service.tail.alive()
    finally:
        service.tail.stop()


def test_the_canary_tail_counts_a_broken_list_of_its_user_and_still_finds_the_next(settings):
    user = f"canary:test-{uuid.uuid4().hex[:8]}"
    counted: list[tuple[str, str]] = []
    tail = RecommendationsTail(settings.kafka, user, on_unreadable=lambda topic, reason: counted.append((topic, reason)))
    tail.start()
    try:
        assert tail.ready.wait(30)
        time.sleep(1)  # assigned at the end: what follows is read
        ts = int(time.time() * 1000)
        good = Recommendations(user_id=user, rec_id="r", items=[], model_version="signals", variant="v", generated_at=ts,
                               source_event_ts=ts, degraded=False)
        broken = garbage.kinds(user, orjson.dumps({**orjson.loads(good.encode()), "items": "none"}))
        garbage.produce(settings, Topic.RECOMMENDATIONS.value,
                        [*((user.encode(), value) for value in broken.values()), (user.encode(), good.encode())])
        wait_until(lambda: tail.find(ts) is not None, "the canary's good list after the broken ones")
        assert len(counted) == len(broken) and {topic for topic, _ in counted} == {Topic.RECOMMENDATIONS.value}
        assert all(reason.startswith("breaks the recommendations contract: ") for _, reason in counted)
    finally:
        tail.stop()
