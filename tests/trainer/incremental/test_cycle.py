"""The trainer on the real stack (Kafka, Redis, Triton): cycles publish sequence versions that Triton
serves while a client asks, new items appended, a worse challenger refused while the old version
keeps serving, versions Triton cannot load refused, rollback, resuming from the recorded offsets, garbage on
events.accepted dead-lettered with why."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid

import numpy as np
import orjson
import pytest
import torch
import tritonclient.grpc as grpcclient

from streamrec.events import ClickEvent
from streamrec.model import contract
from streamrec.model.registry import VersionRejected
from streamrec.model.sequence_request import sequence_inputs
from streamrec.model.served_sequence import load_version
from streamrec.topics import Topic
from tests import garbage
from tests.trainer.incremental.conftest import KNOWN_ITEMS, make_trainer_model, trainer_settings
from trainer.incremental.cycle import run_cycle, state_dir
from trainer.incremental.replay_buffer import ReplayBuffer

pytestmark = pytest.mark.stack


def model_updates(kafka_reader, model: str, expected: int) -> list[dict]:
    """This test's model's messages on ``model.updates`` (from where the topic ended when it began)."""
    found = kafka_reader.read(Topic.MODEL_UPDATES, match=lambda v: v.get("model") == model, expected=expected, timeout_s=10)
    return [{k: v for k, v in message.items() if not k.startswith("_")} for message in found]


def ask(settings, model: str, histories, *, candidates=None, k: int = 10, version: str = ""):
    with grpcclient.InferenceServerClient(settings.triton.grpc_url) as client:
        result = client.infer(model, sequence_inputs(histories, k=k, candidates=candidates), model_version=version,
                              client_timeout=60)
    items = [[value.decode() for value in row] for row in result.as_numpy(contract.TOPK_ITEMS)]
    return items, result.as_numpy(contract.TOPK_SCORES), result.as_numpy(contract.CANDIDATE_SCORES)


def assert_serves(settings, model: str, folder, histories, candidates) -> None:
    """Triton's answers are the in-process answers of the version in ``folder``."""
    items, top, scores = ask(settings, model, histories, candidates=candidates)
    expected = load_version(folder).rank(histories, k=10, candidates=candidates)
    assert items == expected.top_items
    np.testing.assert_allclose(top, expected.top_scores, atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores, expected.candidate_scores, atol=1e-4, rtol=0)


async def ask_while(settings, model: str, history: list[str], work) -> tuple[int, list[str], object]:
    """Ask Triton continuously while ``work`` runs in a thread; returns (answers, failures, work's result)."""
    failures: list[str] = []
    calls = 0
    task = asyncio.ensure_future(asyncio.to_thread(work))
    while not task.done():
        try:
            items, top, _ = await asyncio.to_thread(ask, settings, model, [history])
            assert all(items[0]) and np.isfinite(top).all()
            calls += 1
        except Exception as error:  # noqa: BLE001 - every failure is counted and reported
            failures.append(f"{type(error).__name__}: {error}")
        await asyncio.sleep(0.02)
    return calls, failures, task.result()


async def test_two_cycles_publish_new_items_while_a_client_asks_then_rollback(settings, amazon_text, send_sequences, kafka_reader):
    (catalog, _), _ = amazon_text
    name = f"trainer_accept_{uuid.uuid4().hex[:6]}"
    registry = make_trainer_model(settings, name, amazon_text)
    config = trainer_settings(settings, name)
    history = list(catalog.item_ids[:3])

    def two_cycles():
        results = []
        for first_user in (0, 120):
            send_sequences(first_user, 120)
            results.append(run_cycle(config, say=print))
        return results

    calls, failures, results = await ask_while(settings, name, history, two_cycles)
    assert [r.status for r in results] == ["published", "published"], [r.reason for r in results]
    assert [r.version for r in results] == [2, 3]
    assert failures == [], failures[:3]
    assert calls > 20  # the client really asked across both publishes
    assert registry.served_version() == 3 and registry.versions() == [1, 2, 3]

    # lineage: each version records its parent, the gate's figures and the offsets it read up to
    meta2, meta3 = registry.metadata(2), registry.metadata(3)
    assert meta2.kind == "sequence" and meta2.lineage["parent"] == 1 and meta3.lineage["parent"] == 2
    assert meta3.lineage["start_offsets"] == meta2.lineage["offsets"]  # cycle 2 resumed where cycle 1 ended
    assert meta2.lineage["events_used"] == results[0].events_used > 0
    gate = meta2.lineage["gate"]
    assert gate["metric"] == "ndcg10" and gate["rows"] == results[0].counts["held_out"] > 0
    assert {"challenger", "champion", "se", "tolerance", "passed"} <= set(gate)
    assert meta2.metrics["holdout_ndcg10"] == gate["challenger"] and meta2.metrics["holdout_ndcg10_se"] == gate["se"]
    updates = model_updates(kafka_reader, name, expected=2)
    assert [(u["event"], u["version"]) for u in updates] == [("published", 2), ("published", 3)]
    assert set(updates[0]) >= {"version", "metrics", "gate", "offsets", "events_used", "duration_s"}
    decisions = [json.loads(line) for line in (state_dir(config) / "decisions.jsonl").read_text().splitlines()]
    assert [(d["status"], d.get("version")) for d in decisions] == [("published", 2), ("published", 3)]
    assert decisions[0]["gate"]["se"] == gate["se"]

    # new items: appended to the version (text from the catalog) and ranked by Triton
    v1, v3 = load_version(registry.model_dir / "1"), load_version(registry.model_dir / "3")
    new = [item for item in v3.item_ids if item not in v1.position]
    assert results[0].counts["items_added"] > 0 and len(new) == sum(r.counts["items_added"] for r in results)
    assert v3.item_ids[:KNOWN_ITEMS] == v1.item_ids and not set(new) & set(catalog.item_ids[:KNOWN_ITEMS])
    member = v3.ensemble.members[0]
    assert member.covisit.shape == (v3.n_items, v3.n_items) and float(member.covisit.sum()) > 0  # fresh counts
    torch.testing.assert_close(member.covisit_t, member.covisit.t())
    candidates = [new[:5], list(catalog.item_ids[:5])]
    assert_serves(settings, name, registry.model_dir / "3", [history, new[5:9]], candidates)
    assert np.isfinite(ask(settings, name, [history], candidates=[new[:5]])[2]).all()

    # the users' sequences are kept for the next cycle (the most recently active, up to the capacity)
    buffer = ReplayBuffer.load(state_dir(config) / "replay.json", 1000)
    capacity = config.trainer.replay_capacity
    assert len(buffer) == min(capacity, results[0].counts["users"] + results[1].counts["users"]) == capacity
    assert results[1].counts["replayed"] > 0 and results[1].counts["buffer_users"] == results[0].counts["users"]

    # rollback under load: version 2 serves again
    calls, failures, rolled_to = await ask_while(settings, name, history, registry.rollback)
    assert rolled_to == 2 and failures == []
    assert registry.served_version() == 2 and registry.versions() == [1, 2] and registry.retired() == [3]
    assert_serves(settings, name, registry.model_dir / "2", [history], [list(catalog.item_ids[:5])])
    assert registry.next_version() == 4  # a retired number is never reused


def worse(model, rows, config, say):
    """A challenger that ranks by the opposite of what it knows."""
    with torch.no_grad():
        model.signal_weight.mul_(-20.0)
        model.items.text_bias.weight.normal_(0.0, 5.0)


def broken(model, rows, config, say):
    with torch.no_grad():
        model.signal_weight.fill_(float("nan"))


def test_worse_and_broken_challengers_are_rejected_the_old_keeps_serving_and_the_next_cycle_rereads(
        settings, amazon_text, send_sequences, kafka_reader):
    (catalog, _), _ = amazon_text
    name = f"trainer_worse_{uuid.uuid4().hex[:6]}"
    registry = make_trainer_model(settings, name, amazon_text)
    send_sequences(300, 100)
    history = list(catalog.item_ids[10:14])
    before = ask(settings, name, [history])
    strict = trainer_settings(settings, name, gate_se=1.0, holdout_fraction=0.5)

    result = run_cycle(strict, train=worse, say=print)
    assert result.status == "rejected", result.reason
    # judged on the ranking, with both figures and the SE recorded
    assert result.gate["challenger"] < result.gate["champion"] - result.gate["tolerance"]
    assert result.gate["se"] > 0 and result.gate["tolerance"] == result.gate["se"]
    nan = run_cycle(strict, train=broken, say=print)
    assert nan.status == "rejected" and "non-finite" in nan.reason
    decisions = [json.loads(line) for line in (state_dir(strict) / "decisions.jsonl").read_text().splitlines()]
    assert [d["status"] for d in decisions] == ["rejected", "rejected"]
    assert decisions[0]["gate"]["se"] == result.gate["se"] and decisions[0]["gate"]["champion"] == result.gate["champion"] > 0

    assert registry.served_version() == 1 and registry.versions() == [1]
    assert not list((settings.stack.model_repo / ".staging").glob(f"{name}-*"))
    again = ask(settings, name, [history])
    assert again[0] == before[0]
    np.testing.assert_array_equal(again[1], before[1])
    # Each verdict is announced, naming the version that keeps serving; nothing was published.
    updates = model_updates(kafka_reader, name, expected=2)
    assert [(u["event"], u["version"]) for u in updates] == [("rejected", 1), ("rejected", 1)]
    assert updates[0]["gate"]["champion"] == result.gate["champion"] and not updates[0]["gate"]["passed"]
    # nothing was published, so the next cycle reads the same events again
    retry = run_cycle(trainer_settings(settings, name), say=print)
    assert retry.status == "published" and retry.version == 2
    assert registry.metadata(2).lineage["start_offsets"] == registry.metadata(1).lineage["offsets"]
    assert retry.events_used == result.events_used == nan.events_used


def test_a_version_triton_cannot_load_is_refused_while_the_old_one_serves(settings, amazon_text):
    name = f"trainer_triton_{uuid.uuid4().hex[:6]}"
    registry = make_trainer_model(settings, name, amazon_text)
    broken_folder = registry.model_dir / "2"
    shutil.copytree(registry.model_dir / "1", broken_folder)  # complete, but its weights are garbage
    (broken_folder / "member-0.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(VersionRejected):
        registry.activate(2, previous=1)
    assert registry.served_version() == 1 and registry.versions() == [1] and registry.retired() == [2]
    (catalog, _), _ = amazon_text
    assert all(ask(settings, name, [list(catalog.item_ids[:2])], version="1")[0][0])
    assert registry.reconcile() == 1


def test_garbage_on_events_accepted_is_dead_lettered_with_why_and_the_cycle_learns_from_the_rest(
        settings, amazon_text, send_sequences, kafka_reader):
    name = f"trainer_dlq_{uuid.uuid4().hex[:6]}"
    registry = make_trainer_model(settings, name, amazon_text)
    marker = uuid.uuid4().hex
    event = ClickEvent(user_id=marker, item_id="x").model_dump(mode="json")
    wrong = orjson.dumps({"event": {**event, "type": "refund"}, "topic": Topic.CLICKS.value, "partition": 0, "offset": 1})
    values = garbage.kinds(marker, wrong)
    since = garbage.produce(settings, Topic.ACCEPTED.value, [(b"someone", value) for value in values.values()])
    sent = send_sequences(620, 40)
    result = run_cycle(trainer_settings(settings, name), train=lambda *args: None, say=print)
    assert result.status == "published" and result.version == 2, result.reason
    assert result.unreadable == result.dead_lettered == len(values)  # counted, and written out once published
    assert result.events_used == sent  # the readable events all used
    letters = garbage.read_letters(kafka_reader, f"trainer:{Topic.ACCEPTED.value}", since, expected=len(values))
    for kind, value in values.items():
        letter = garbage.letter_for(letters, value)
        assert letter is not None, f"no dead letter for {kind!r}"
        assert letter["reason"].startswith("breaks the events.accepted contract: "), letter["reason"]
    assert "tombstone" in garbage.letter_for(letters, None)["reason"]
    assert "event: Input tag 'refund' found using 'type' does not match" in garbage.letter_for(letters, wrong)["reason"]
    assert len(garbage.letter_for(letters, values["many unknown fields"])["errors"]) <= 20
    assert registry.metadata(2).lineage["offsets"] == result.offsets  # the version moved past them
