"""The experiments store and the report on the session's real Redis: one running experiment at a
time, stop keeps the counts, the report reads what the attribution worker and serving wrote."""

from __future__ import annotations

import random
import uuid

import pytest

from streamrec.experiments.definition import Experiment, Variant
from streamrec.experiments.report import build_report
from streamrec.experiments.store import ExperimentError, ExperimentStore, RunningExperiment
from streamrec.store.attribution import AttributionStore
from streamrec.store.connection import connect
from streamrec.store.guardrails import GuardrailStore, ServedList


@pytest.fixture
async def client(settings):
    db = random.Random().randint(2, 15)
    redis = connect(settings.redis.model_copy(update={"url": settings.redis_url.rsplit("/", 1)[0] + f"/{db}"}))
    await redis.flushdb()
    yield redis
    await redis.flushdb()
    await redis.aclose()


def experiment(name: str) -> Experiment:
    return Experiment(name=name, salt="s", variants=[Variant(name="control", ranking="popularity", share=0.5),
                                                     Variant(name="bert", ranking="full", share=0.5)])


async def test_one_experiment_runs_at_a_time_and_processes_follow_start_and_stop(client):
    store = ExperimentStore(client)
    name = f"x{uuid.uuid4().hex[:8]}"
    view = RunningExperiment(store, refresh_s=60)
    await view.refresh()
    assert view.current is None
    created = await store.create(experiment(name))
    assert created.version == 1 and created.status == "running"
    with pytest.raises(ExperimentError, match="is running"):
        await store.create(experiment(f"{name}-2"))
    with pytest.raises(ExperimentError, match="exists"):
        await store.create(experiment(name))
    await view.refresh()
    assert view.current == created
    stopped = await store.stop(name)
    assert stopped.status == "stopped" and stopped.version == 2 and stopped.stopped_at is not None
    await view.refresh()
    assert view.current is None
    assert [e.name for e in await store.all()] == [name]
    assert (await store.create(experiment(f"{name}-2"))).status == "running"  # the next one may start now


async def write_counts(client, name: str, users: dict[str, int], clicks_per_user: dict[str, int]) -> None:
    counts = {}
    for variant, count in users.items():
        counts[(name, variant, "impressions")] = {f"{variant}-{n}": 4 for n in range(count)}
        counts[(name, variant, "clicks")] = {f"{variant}-{n}": clicks_per_user[variant] if n % 2 else 0 for n in range(count)}
        counts[(name, variant, "purchases")] = {f"{variant}-{n}": 1 for n in range(0, count, 10)}
        counts[(name, variant, "revenue")] = {f"{variant}-{n}": 20.0 for n in range(0, count, 10)}
    async with client.pipeline(transaction=True) as pipe:
        AttributionStore.queue_counts(pipe, counts)
        await pipe.execute()


async def test_report_reads_the_counts_flags_a_skewed_split_and_shows_guardrails(client):
    name = f"x{uuid.uuid4().hex[:8]}"
    created = await ExperimentStore(client).create(experiment(name))
    await write_counts(client, name, {"control": 5300, "bert": 4700}, {"control": 1, "bert": 2})
    await GuardrailStore(client).add([ServedList(name, "bert", degraded=n < 3, empty=False, seconds=0.004 if n < 95 else 0.2)
                                      for n in range(100)])
    report = await build_report(client, created)

    control, bert = report.variants
    assert control.totals["users"] == 5300 and control.totals["impressions"] == 5300 * 4
    assert control.estimates["ctr"].value == pytest.approx((5300 // 2) / (5300 * 4))
    assert bert.estimates["conversion"].value == pytest.approx(470 / 4700)
    assert bert.versus_control["ctr"].value > 0 and bert.versus_control["ctr"].p_value < 1e-6
    assert report.sample_ratio is not None and report.sample_ratio.mismatch  # 53/47 for a 50/50 split
    assert bert.guardrails.lists == 100 and bert.guardrails.degraded_share == pytest.approx(0.03)
    assert bert.guardrails.p99_ms == 250  # 5 of 100 lists took 200 ms: the 99th is in the 250 ms bucket
    assert control.guardrails.lists == 0


async def test_a_balanced_split_is_not_flagged(client):
    name = f"x{uuid.uuid4().hex[:8]}"
    created = await ExperimentStore(client).create(experiment(name))
    await write_counts(client, name, {"control": 5020, "bert": 4980}, {"control": 1, "bert": 1})
    report = await build_report(client, created)
    assert not report.sample_ratio.mismatch
    assert abs(report.variants[1].versus_control["ctr"].value) < 0.01


async def test_guardrail_counts_never_fail_the_list_they_describe():
    from streamrec.settings import RedisSettings
    from streamrec.stack.process import free_port

    unreachable = connect(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        await GuardrailStore(unreachable).add([ServedList("x", "v", degraded=False, empty=False, seconds=0.01)])  # no raise
    finally:
        await unreachable.aclose()
