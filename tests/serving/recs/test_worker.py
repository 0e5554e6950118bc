"""A real recs worker fed straight through ``profiles.updated``: garbage is dead-lettered with a
reason, counted, and the good update sent after it on the same partition still yields a list on
``recommendations``; an update the cached list already reflects costs no list."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamrec.components import ComponentProcess
from streamrec.kafka_admin import commit_groups_at_end
from streamrec.messages import ProfileUpdated, Recommendations
from streamrec.stack.isolated import stack_environment
from streamrec.stack.process import free_port
from streamrec.store import layout
from streamrec.store.connection import connect_blocking
from streamrec.topics import Topic
from tests import garbage

pytestmark = pytest.mark.stack

SOURCE = f"recs:{Topic.PROFILES_UPDATED.value}"


@pytest.fixture(scope="module")
def worker(settings, tmp_path_factory) -> Iterator[dict]:
    """`streamrec recs worker` with a group of its own at today's log end, on a Redis database of its own."""
    group = f"garbage-recs-{uuid.uuid4().hex[:8]}"
    commit_groups_at_end(settings.kafka, {group: [Topic.PROFILES_UPDATED.value]})
    port = free_port()
    redis_url = settings.redis_url.rsplit("/", 1)[0] + f"/{random.randint(2, 15)}"
    env = {**stack_environment(settings.stack), "STREAMREC_REDIS__URL": redis_url,
           "STREAMREC_RECS__APP_ID": group, "STREAMREC_RECS__WEB_PORT": str(port), "STREAMREC_RECS__SCORER_BUDGET_MS": "5000"}
    process = ComponentProcess(["recs", "worker"], tmp_path_factory.mktemp("recs") / "recs.log", env).start()
    try:
        process.wait_http(f"http://127.0.0.1:{port}/metrics", timeout_s=180)  # answers once the service is ready
        yield {"process": process, "metrics": f"http://127.0.0.1:{port}/metrics", "redis_url": redis_url}
    finally:
        process.stop()


def counted(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for found in family.samples:
            if found.name == name and found.labels == (labels or {}):
                return found.value
    return 0.0


def dead_letters_counted(url: str) -> float:
    return counted(url, "streamrec_recs_dead_letters_total", {"topic": Topic.PROFILES_UPDATED.value})


def test_an_update_the_cached_list_already_reflects_is_skipped_and_a_degraded_list_is_recomputed(worker, settings, kafka_reader):
    """A worker behind its log has already published lists with newer events than the updates
    still waiting: those updates cost nothing. A degraded list never counts as current, nor does a
    list of another variant than the user's now (an experiment started or stopped since)."""
    marker = uuid.uuid4().hex[:8]
    probe = ProfileUpdated(user_id=f"probe-{marker}", newest_event_ts=int(time.time() * 1000))
    # Sent again until its list comes: a probe sent before the worker holds its partition is
    # skipped when the group has no committed offset yet (a new group starts at the log end).
    for _ in range(8):
        garbage.produce(settings, Topic.PROFILES_UPDATED.value, [(probe.key(), probe.encode())])
        if kafka_reader.read(Topic.RECOMMENDATIONS, match=lambda v: v.get("user_id") == probe.user_id, expected=1, timeout_s=15,
                             settle_s=0):
            break
    else:
        raise AssertionError(f"the worker never consumed:\n{worker['process'].log_tail()}")
    now = int(time.time() * 1000)
    current, degraded, relabelled = f"current-{marker}", f"degraded-{marker}", f"relabelled-{marker}"
    client = connect_blocking(settings.redis.model_copy(update={"url": worker["redis_url"]}))
    try:
        for user, is_degraded in ((current, False), (degraded, True), (relabelled, False)):
            variant = "ended-experiment-variant" if user == relabelled else settings.recs.variant
            cached = Recommendations(user_id=user, rec_id=f"cached-{user}", items=[], model_version="test", variant=variant,
                                     generated_at=now, source_event_ts=now + 60_000, degraded=is_degraded,
                                     degraded_reason="scorer unavailable: test" if is_degraded else None)
            client.set(layout.recommendations_key(user), cached.encode(), px=600_000)
    finally:
        client.close()
    before = counted(worker["metrics"], "streamrec_recs_updates_already_current_total")
    updates = [ProfileUpdated(user_id=user, newest_event_ts=now) for user in (current, degraded, relabelled)]
    garbage.produce(settings, Topic.PROFILES_UPDATED.value, [(update.key(), update.encode()) for update in updates])

    lists = kafka_reader.read(Topic.RECOMMENDATIONS, match=lambda v: v.get("user_id") in (current, degraded, relabelled),
                              expected=2, timeout_s=90, settle_s=3)
    assert sorted(v["user_id"] for v in lists) == sorted([degraded, relabelled]), \
        f"{[v['user_id'] for v in lists]}:\n{worker['process'].log_tail()}"
    deadline = time.monotonic() + 30
    while counted(worker["metrics"], "streamrec_recs_updates_already_current_total") < before + 1:
        assert time.monotonic() < deadline, "the skipped update was not counted"
        time.sleep(0.5)


def test_garbage_updates_are_dead_lettered_with_a_reason_counted_and_the_next_update_gets_its_list(worker, settings, kafka_reader):
    marker = uuid.uuid4().hex
    user = f"after-garbage-{marker}"
    wrong = orjson.dumps({"user_id": marker, "newest_event_ts": "yesterday"})  # the right fields, one of the wrong type
    values = {**garbage.kinds(marker, wrong), "an id of the wrong type": orjson.dumps({"user_id": 7, "newest_event_ts": 1})}
    reasons = {"not JSON": "Invalid JSON", "truncated JSON": "Invalid JSON", "JSON of the wrong shape": "(message): Input should be an object",
               "a JSON string": "(message): Input should be an object", "a wrong type field": "newest_event_ts: Input should be a valid integer",
               "many unknown fields": "more)", "huge": "Invalid JSON", "empty": "Invalid JSON", "tombstone": "no value (a tombstone)",
               "an id of the wrong type": "user_id: Input should be a valid string"}
    before = dead_letters_counted(worker["metrics"])
    good = ProfileUpdated(user_id=user, newest_event_ts=int(time.time() * 1000))
    since = garbage.produce(settings, Topic.PROFILES_UPDATED.value,
                            [*((marker.encode(), value) for value in values.values()), (good.key(), good.encode())])

    lists = kafka_reader.read(Topic.RECOMMENDATIONS, match=lambda v: v.get("user_id") == user, expected=1, timeout_s=90)
    assert len(lists) == 1, f"no list after the garbage:\n{worker['process'].log_tail()}"
    assert lists[0]["source_event_ts"] in (None, good.newest_event_ts)
    letters = garbage.read_letters(kafka_reader, SOURCE, since, expected=len(values))
    for name, value in values.items():
        letter = garbage.letter_for(letters, value)
        assert letter is not None, f"no dead letter for {name!r}"
        assert letter["reason"].startswith("breaks the profiles.updated contract: ") and reasons[name] in letter["reason"], \
            (name, letter["reason"])
    many = garbage.letter_for(letters, values["many unknown fields"])
    assert 0 < len(many["errors"]) <= 20 and many["raw_truncated"]  # the details capped: the letter fits in Kafka
    deadline = time.monotonic() + 30
    while dead_letters_counted(worker["metrics"]) < before + len(values):
        assert time.monotonic() < deadline, "the dead letters were not counted"
        time.sleep(0.5)
    assert worker["process"].alive()
