"""A real recs worker fed garbage straight into ``profiles.updated``: each record is dead-lettered
with a reason, counted, and the good update sent after it on the same partition still yields a
list on ``recommendations``."""

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
from streamrec.messages import ProfileUpdated
from streamrec.stack.isolated import stack_environment
from streamrec.stack.process import free_port
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
    env = {**stack_environment(settings.stack), "STREAMREC_REDIS__URL": settings.redis_url.rsplit("/", 1)[0] + f"/{random.randint(2, 15)}",
           "STREAMREC_RECS__APP_ID": group, "STREAMREC_RECS__WEB_PORT": str(port), "STREAMREC_RECS__SCORER_BUDGET_MS": "5000"}
    process = ComponentProcess(["recs", "worker"], tmp_path_factory.mktemp("recs") / "recs.log", env).start()
    try:
        process.wait_http(f"http://127.0.0.1:{port}/metrics", timeout_s=180)  # answers once the service is ready
        yield {"process": process, "metrics": f"http://127.0.0.1:{port}/metrics"}
    finally:
        process.stop()


def dead_letters_counted(url: str) -> float:
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for found in family.samples:
            if found.name == "streamrec_recs_dead_letters_total" and found.labels == {"topic": Topic.PROFILES_UPDATED.value}:
                return found.value
    return 0.0


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
