"""The trainer on the real stack (Kafka, Redis, Triton): cycles publish while a client scores,
rollback, broken versions refused, the gate's figures, resuming from the recorded offsets."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid

import numpy as np
import pytest
import torch
from confluent_kafka import Producer

from serving.engine.scorer_client import TritonScorerClient
from streamrec.model.artifacts import WEIGHTS, load_folder
from streamrec.model.inference import InProcessScorer
from streamrec.model.registry import PROBE_CONTEXTS, PROBE_ITEMS, VersionRejected
from streamrec.topics import Topic
from tests.trainer.incremental.conftest import make_trainer_model, trainer_settings
from trainer.incremental.cycle import run_cycle, state_dir

pytestmark = pytest.mark.stack


def model_updates(kafka_reader, model: str, expected: int) -> list[dict]:
    """This test's model's messages on ``model.updates`` (from where the topic ended when it began)."""
    found = kafka_reader.read(Topic.MODEL_UPDATES, match=lambda v: v.get("model") == model, expected=expected, timeout_s=10)
    return [{k: v for k, v in message.items() if not k.startswith("_")} for message in found]


def served_scores(settings, model: str, version: int | None = None) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, texts in (("CONTEXT", PROBE_CONTEXTS), ("ITEM", PROBE_ITEMS)):
        payload = np.array([[t.encode()] for t in texts], dtype=np.object_)
        tensor = grpcclient.InferInput(name, list(payload.shape), "BYTES")
        tensor.set_data_from_numpy(payload)
        inputs.append(tensor)
    with grpcclient.InferenceServerClient(settings.triton.grpc_url) as client:
        return client.infer(model, inputs, model_version=str(version or "")).as_numpy("SCORE").reshape(-1)


def local_scores(folder) -> np.ndarray:
    module, tokenizer, metadata = load_folder(folder)
    return InProcessScorer(module, tokenizer, max_length=metadata.max_length, precision="fp32").score_pairs(PROBE_CONTEXTS, PROBE_ITEMS)


async def score_while(settings, model: str, work) -> tuple[int, list[str], object]:
    """Score continuously on Triton while ``work`` runs in a thread; returns (calls, failures, stats)."""
    client = TritonScorerClient(settings.triton.grpc_url, model=model, timeout_s=10.0)
    failures: list[str] = []
    calls = 0
    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        while not task.done():
            try:
                scores = await client.score(PROBE_CONTEXTS[0], PROBE_ITEMS)
                assert scores.shape == (len(PROBE_ITEMS),) and np.isfinite(scores).all()
                calls += 1
            except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                failures.append(f"{type(error).__name__}: {error}")
            await asyncio.sleep(0.02)
        result = task.result()
    finally:
        stats = client.stats
        await client.close()
    return calls, failures, (stats, result)


async def test_two_cycles_publish_while_a_client_scores_then_rollback(settings, send_sequences, kafka_reader):
    name = f"trainer_accept_{uuid.uuid4().hex[:6]}"
    registry = make_trainer_model(settings, name)
    config = trainer_settings(settings, name)

    def two_cycles():
        results = []
        for first_user in (0, 120):
            send_sequences(first_user, 120)
            results.append(run_cycle(config, say=print))
        return results

    calls, failures, (stats, results) = await score_while(settings, name, two_cycles)
    assert [r.status for r in results] == ["published", "published"], [r.reason for r in results]
    assert [r.version for r in results] == [2, 3]
    assert failures == [] and stats.failed_requests == 0, failures[:3]
    assert calls > 20  # the client really scored across both publishes
    assert registry.served_version() == 3 and registry.versions() == [1, 2, 3]

    # lineage: each version records its parent, the gate's figures and the offsets it read up to
    meta2, meta3 = registry.metadata(2), registry.metadata(3)
    assert meta2.lineage["parent"] == 1 and meta3.lineage["parent"] == 2
    assert meta3.lineage["start_offsets"] == meta2.lineage["offsets"]  # cycle 2 resumed where cycle 1 ended
    assert meta2.lineage["events_used"] == results[0].events_used > 0
    assert set(meta2.lineage["gate"]["challenger"]) >= {"ndcg10", "hr10", "auc"}
    updates = model_updates(kafka_reader, name, expected=2)
    assert [(u["event"], u["version"]) for u in updates] == [("published", 2), ("published", 3)]
    assert set(updates[0]) >= {"version", "metrics", "gate", "offsets", "events_used", "duration_s"}
    decisions = [json.loads(line) for line in (state_dir(config) / "decisions.jsonl").read_text().splitlines()]
    assert [(d["status"], d.get("version")) for d in decisions] == [("published", 2), ("published", 3)]

    # Triton serves version 3's weights, then, after a rollback under load, version 2's
    np.testing.assert_allclose(served_scores(settings, name), local_scores(registry.model_dir / "3"), rtol=1e-3, atol=1e-3)
    calls, failures, (stats, rolled_to) = await score_while(settings, name, registry.rollback)
    assert rolled_to == 2 and failures == [] and stats.failed_requests == 0
    assert registry.served_version() == 2 and registry.versions() == [1, 2] and registry.retired() == [3]
    np.testing.assert_allclose(served_scores(settings, name), local_scores(registry.model_dir / "2"), rtol=1e-3, atol=1e-3)
    assert registry.next_version() == 4  # a retired number is never reused


def test_broken_weights_are_rejected_and_the_served_version_stays(settings, send_sequences, kafka_reader):
    name = f"trainer_broken_{uuid.uuid4().hex[:6]}"
    registry = make_trainer_model(settings, name)
    config = trainer_settings(settings, name)
    send_sequences(300, 60)
    before = served_scores(settings, name)

    def poison(scorer, tokenizer, examples, data, learn, say):
        with torch.no_grad():
            next(scorer.backbone.parameters()).fill_(float("nan"))

    result = run_cycle(config, train=poison, say=print)
    assert result.status in ("rejected", "failed")
    assert registry.served_version() == 1 and registry.versions() == [1]
    assert not list((settings.stack.model_repo / ".staging").glob(f"{name}-*"))
    np.testing.assert_array_equal(served_scores(settings, name), before)
    assert model_updates(kafka_reader, name, expected=0) == []
    # nothing was published, so the next cycle reads the same events again
    retry = run_cycle(config, say=print)
    assert retry.status == "published" and retry.version == 2
    assert registry.metadata(2).lineage["start_offsets"] == registry.metadata(1).lineage["offsets"]


def test_a_version_triton_cannot_load_is_refused_while_the_old_one_serves(settings):
    name = f"trainer_triton_{uuid.uuid4().hex[:6]}"
    registry = make_trainer_model(settings, name)
    broken = registry.model_dir / "2"
    shutil.copytree(registry.model_dir / "1", broken)  # complete, but its weights are garbage
    (broken / WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(VersionRejected):
        registry.activate(2, previous=1)
    assert registry.served_version() == 1 and registry.versions() == [1] and registry.retired() == [2]
    assert np.isfinite(served_scores(settings, name, 1)).all()
    assert registry.reconcile() == 1


def test_an_unchanged_challenger_gets_the_champions_figures(settings, send_sequences):
    name = f"trainer_same_{uuid.uuid4().hex[:6]}"
    make_trainer_model(settings, name)
    send_sequences(400, 60)
    config = trainer_settings(settings, name, gate_tolerance=0.0)
    result = run_cycle(config, train=lambda *args: None, say=print)
    assert result.gate["challenger"] == result.gate["champion"]
    assert result.gate["passed"] and result.status == "published"
    assert result.gate["challenger"]["examples"] == result.examples["held_out"] > 0


def test_an_unreadable_accepted_message_is_dead_lettered_and_the_cycle_goes_on(settings, send_sequences, kafka_reader):
    name = f"trainer_dlq_{uuid.uuid4().hex[:6]}"
    registry = make_trainer_model(settings, name)
    marker = uuid.uuid4().hex
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all"})
    producer.produce(Topic.ACCEPTED.value, b'{"event": {"type": "click", "user_id": "' + marker.encode() + b'"', b"someone")
    assert producer.flush(30) == 0
    sent = send_sequences(620, 40)
    config = trainer_settings(settings, name, gate_tolerance=0.0)
    result = run_cycle(config, train=lambda *args: None, say=print)
    assert result.status == "published" and result.version == 2, result.reason
    assert result.unreadable == 1 and result.events_used == sent  # counted, and the readable events all used
    letters = kafka_reader.read(
        Topic.DLQ, match=lambda v: v.get("source") == f"trainer:{Topic.ACCEPTED.value}" and marker in v.get("raw", ""), expected=1
    )
    assert len(letters) == 1
    assert letters[0]["reason"].startswith("breaks the events.accepted contract") and letters[0]["raw_bytes"] > 0
    assert registry.metadata(2).lineage["offsets"] == result.offsets  # the version moved past it
