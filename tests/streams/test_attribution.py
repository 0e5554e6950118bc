"""The attribution worker against the session's real Kafka and Redis, killed with SIGKILL.

Impressions go to ``events.impressions`` and interactions to ``events.accepted`` (as the streams
worker publishes them, some of them twice, as it does after a crash), with malformed records in
between. Workers are killed at random moments and restarted. The per-user counts in Redis must
equal the counts worked out here from the generated data by the attribution rules: direct by
``rec_id``, view-through for purchases of shown items without one, nothing for the rest.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streamrec.components import ComponentProcess
from streamrec.events import CartEvent, ClickEvent, EventContext, ImpressionEvent, PurchaseEvent, ShownItem, encode
from streamrec.kafka_client import client_config
from streamrec.messages import AcceptedEvent
from streamrec.settings import Settings
from streamrec.stack.isolated import stack_environment
from streamrec.stack.process import free_port
from streamrec.store import layout
from streamrec.store.attribution import METRICS
from streamrec.topics import Topic

USERS = 1500
NOW = int(time.time() * 1000) - 3_600_000


def attribution_worker(settings: Settings, *, app_id: str, redis_url: str, log: Path) -> ComponentProcess:
    env = {**stack_environment(settings.stack), "STREAMREC_REDIS__URL": redis_url,
           "STREAMREC_ATTRIBUTION__APP_ID": app_id, "STREAMREC_ATTRIBUTION__WEB_PORT": str(free_port()),
           "STREAMREC_ATTRIBUTION__SESSION_TIMEOUT_S": "6", "STREAMREC_ATTRIBUTION__BATCH_MAX": "50"}
    return ComponentProcess(["streams", "attribution"], log, env)


class Shop:
    """Generated traffic and the counts the attribution rules give for it."""

    def __init__(self, experiment: str, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.experiment = experiment
        self.impressions: list[ImpressionEvent] = []
        self.interactions: list[ClickEvent | CartEvent | PurchaseEvent] = []
        self.expected: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for n in range(USERS):
            user = f"attr-{experiment}-{n}"
            variant = "a" if n % 2 else "b"
            ts = NOW + n
            shown_lists = []
            for _ in range(rng.randint(1, 3)):
                items = [f"item-{rng.randrange(200)}" for _ in range(5)]
                items = list(dict.fromkeys(items))
                rec_id = uuid.uuid4().hex
                teams = [rng.choice("ab") for _ in items] if n % 5 == 0 else [None] * len(items)
                self.impressions.append(ImpressionEvent(
                    user_id=user, ts=ts, rec_id=rec_id, variant=variant, experiment=experiment,
                    items=[ShownItem(item_id=i, position=p, team=t) for p, (i, t) in enumerate(zip(items, teams))]))
                shown_lists.append((rec_id, items, teams))
                self.add(variant, "impressions", user)
                self.add(variant, "items_shown", user, len(items))
                ts += 1000
            for rec_id, items, teams in shown_lists:
                if rng.random() < 0.6:  # a click from the list
                    position = rng.randrange(len(items))
                    self.interactions.append(ClickEvent(user_id=user, item_id=items[position], ts=ts,
                                                        context=EventContext(rec_id=rec_id, variant=variant)))
                    self.add(variant, "clicks", user)
                    if teams[position] is not None:
                        self.add(variant, f"clicks_{teams[position]}", user)
                    ts += 1000
                if rng.random() < 0.3:
                    self.interactions.append(CartEvent(user_id=user, item_id=items[0], ts=ts,
                                                       context=EventContext(rec_id=rec_id, variant=variant)))
                    self.add(variant, "carts", user)
                    ts += 1000
            if rng.random() < 0.4:  # bought something it was shown, from the list
                rec_id, items, _ = shown_lists[0]
                self.purchase(user, items[-1], ts, variant, EventContext(rec_id=rec_id, variant=variant), price=12.5, quantity=2)
                ts += 1000
            if rng.random() < 0.4:  # came back and bought a shown item directly: view-through
                self.purchase(user, shown_lists[-1][1][0], ts, variant, EventContext(), price=3.25, view_through=True)
                ts += 1000
            if rng.random() < 0.5:  # organic: no list led to these
                self.interactions.append(ClickEvent(user_id=user, item_id="item-organic", ts=ts))
                self.interactions.append(PurchaseEvent(user_id=user, item_id="item-organic", order_id="o", price=1.0, ts=ts + 1))
            if rng.random() < 0.1:  # a list whose impression never came: labelled by the click itself
                self.interactions.append(ClickEvent(user_id=user, item_id="item-x", ts=ts + 2,
                                                    context=EventContext(rec_id=uuid.uuid4().hex, variant=variant, experiment=experiment)))
                self.add(variant, "clicks", user)

    def add(self, variant: str, metric: str, user: str, value: float = 1) -> None:
        self.expected[(variant, metric)][user] += value

    def purchase(self, user, item, ts, variant, context, *, price, quantity=1, view_through=False) -> None:
        self.interactions.append(PurchaseEvent(user_id=user, item_id=item, order_id=uuid.uuid4().hex, price=price,
                                               quantity=quantity, ts=ts, context=context))
        self.add(variant, "purchases", user)
        self.add(variant, "revenue", user, price * quantity)
        if view_through:
            self.add(variant, "view_through", user)


def stored_counts(client, experiment: str) -> dict[tuple[str, str], dict[str, float]]:
    found = {}
    for variant in ("a", "b"):
        for metric in METRICS:
            rows = client.hgetall(layout.experiment_counts_key(experiment, variant, metric))
            if rows:
                found[(variant, metric)] = {user.decode(): float(value) for user, value in rows.items()}
    return found


def total(counts: dict[tuple[str, str], dict[str, float]]) -> float:
    return sum(sum(rows.values()) for rows in counts.values())


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def redis_db(settings: Settings):
    from streamrec.store.connection import connect_blocking

    db = random.Random().randint(2, 15)
    url = settings.redis_url.rsplit("/", 1)[0] + f"/{db}"
    client = connect_blocking(settings.redis.model_copy(update={"url": url}))
    client.flushdb()
    yield url, client
    client.flushdb()
    client.close()


def test_counts_are_exact_when_the_worker_is_killed_mid_run(settings, redis_db, kafka_reader, tmp_path):
    url, client = redis_db
    experiment = f"x{uuid.uuid4().hex[:10]}"
    shop = Shop(experiment)
    expected = {key: dict(rows) for key, rows in shop.expected.items()}
    producer = Producer(client_config(settings.kafka, client="test-attribution"))
    worker = attribution_worker(settings, app_id=f"test-attribution-{experiment}", redis_url=url, log=tmp_path / "attribution.log")
    rng = random.Random(1)
    try:
        worker.start()
        marker = f"broken-{experiment}"
        broken = 0
        for n, impression in enumerate(shop.impressions):
            producer.produce(Topic.IMPRESSIONS.value, encode(impression), key=impression.user_id.encode())
            if n % 100 == 0:  # a resent impression (same event id) and a record nobody can read
                producer.produce(Topic.IMPRESSIONS.value, encode(impression), key=impression.user_id.encode())
                producer.produce(Topic.IMPRESSIONS.value, f'{{"type":"impression","user_id":"{marker}-{n}"'.encode(), key=b"x")
                broken += 1
        producer.flush(30)
        time.sleep(rng.uniform(1.0, 4.0))
        assert worker.alive(), f"the worker died on its own:\n{worker.log_tail()}"
        worker.kill()
        worker.start()
        impressions = {key: rows for key, rows in expected.items() if key[1] in ("impressions", "items_shown")}
        wait_for(lambda: {k: v for k, v in stored_counts(client, experiment).items() if k[1] in ("impressions", "items_shown")} == impressions,
                 180, "the impressions to be counted")

        for n, event in enumerate(shop.interactions):
            accepted = AcceptedEvent(event=event, topic=Topic.CLICKS.value, partition=0, offset=n)
            topic, key, value = accepted.to_kafka()
            producer.produce(topic, value, key=key)
            if n % 7 == 0:  # the streams worker crashed after publishing and published it again
                producer.produce(topic, value, key=key)
        producer.flush(30)
        # Killed as soon as it has made progress, three times: at least one kill lands mid-run.
        mid_run = 0
        for _ in range(3):
            before = total(stored_counts(client, experiment))
            wait_for(lambda: total(stored_counts(client, experiment)) > before, 120, "progress")
            time.sleep(rng.uniform(0.0, 0.3))
            mid_run += stored_counts(client, experiment) != expected
            assert worker.alive(), f"the worker died on its own:\n{worker.log_tail()}"
            worker.kill()
            worker.start()
        assert mid_run >= 1, "every kill came after the work was done: the test proves nothing"
        wait_for(lambda: stored_counts(client, experiment) == expected, 180, "every interaction to be attributed")
        time.sleep(3)  # nothing more arrives: no record was counted twice after the last restart
        assert stored_counts(client, experiment) == expected
        letters = kafka_reader.read(Topic.DLQ, match=lambda v: marker in v.get("raw", ""), expected=broken, timeout_s=30)
        # Each one at least once (a kill between its delivery and the commit repeats it), none lost.
        assert len({letter["raw"] for letter in letters}) == broken and {letter["source"] for letter in letters} == {"attribution:events.impressions"}
        assert all(letter["reason"].startswith("not JSON") for letter in letters)
    finally:
        worker.stop()
