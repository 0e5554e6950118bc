"""One trainer cycle: new events -> pairs -> warm-started fine-tune -> gate -> publish -> announce.

Order of effects, chosen so that a trainer killed at any point leaves serving untouched and
resumes exactly:

1. make Triton serve the newest complete version (finishes a publish a crash interrupted) and
   remove staging leftovers;
2. read the accepted events (``events.accepted``) after the offsets stored in the served
   version's metadata;
3. build pairs, hold out the newest slice by time, mix in the replay buffer, fine-tune a copy of
   the champion;
4. gate: evaluate challenger and champion on the held-out slice; append the decision, with its
   figures, to ``decisions.jsonl``;
5. only if it passed: dead-letter the batch's unreadable messages (the version about to be
   published moves past them), stage + validate + rename version N+1 (its metadata carries the
   end offsets, the gate and the counts), load it in Triton, warm it up, check its readiness,
   serve it; then announce it on ``model.updates``, commit the group offsets, save the replay
   buffer, prune.

Nothing before step 5's rename changes what a restarted trainer would read, so a crash re-runs
the cycle on the same events (plus newer ones), and a dead letter may be repeated but never lost.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from streamrec.deadletter import DeadLetter
from streamrec.messages import ModelUpdate
from streamrec.model.artifacts import VersionMetadata, load_folder
from trainer.offline.baselines import CoVisitation, Popularity
from trainer.offline.finetune import Say, TrainingTexts
from streamrec.model.networks import CrossEncoderScorer
from streamrec.model.registry import ModelRegistry, VersionRejected
from streamrec.model.updates import announce
from streamrec.producer import deliver
from streamrec.settings import Settings, TrainerSettings
from streamrec.topics import Topic
from trainer.incremental import consume, gate, pairs
from trainer.incremental.learn import LearnConfig, train_challenger
from trainer.incremental.replay_buffer import ReplayBuffer

STATE_DIR = ".trainer"
"""Trainer state inside the model's folder (Triton ignores non-numeric folders there)."""

TrainFn = Callable[[CrossEncoderScorer, object, list, TrainingTexts, LearnConfig, Say], object]


@dataclass
class CycleResult:
    status: str
    """``published`` | ``rejected`` | ``skipped`` (too few events) | ``failed`` (Triton refused it)."""
    champion: int | None
    version: int | None = None
    events_used: int = 0
    unreadable: int = 0
    """Messages on events.accepted that break its contract; dead-lettered when the cycle publishes."""
    duplicates: int = 0
    """Repeated event ids left out (in the new events, or already among the context's)."""
    examples: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    gate: dict | None = None
    duration_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def state_dir(settings: Settings) -> Path:
    return settings.model_repo / settings.trainer.model / STATE_DIR


def registry_for(settings: Settings, say: Say = lambda message: None) -> ModelRegistry:
    return ModelRegistry(
        settings.model_repo, settings.trainer.model, settings.triton.grpc_url or "",
        load_timeout_s=settings.trainer.load_timeout_s, say=say,
    )


def _record(settings: Settings, entry: dict) -> None:
    """Append one decision to ``decisions.jsonl`` (every cycle that got as far as a verdict)."""
    folder = state_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "decisions.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, default=str) + "\n")


def dead_letter(settings: Settings, unreadable: list[consume.Unreadable]) -> None:
    """Each unreadable ``events.accepted`` message to ``events.dlq``, delivered before returning."""
    letters = [
        DeadLetter.wrap(message.raw, reason=message.error.reason, errors=message.error.errors,
                        source=f"trainer:{message.topic}", max_raw_bytes=settings.deadletters.raw_max_bytes)
        for message in unreadable
    ]
    deliver(settings, [(Topic.DLQ.value, None, letter.encode()) for letter in letters], client="trainer")


def _default_train(scorer, tokenizer, examples, data, config, say):
    return train_challenger(scorer, tokenizer, examples, data, config, say=say)


def run_cycle(
    settings: Settings,
    *,
    say: Say = print,
    train: TrainFn = _default_train,
    seed: int = 0,
) -> CycleResult:
    """Run one cycle against the configured stack; see the module docstring for the order of effects."""
    t: TrainerSettings = settings.trainer
    started = time.monotonic()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        timings[name] = round(now - since, 3)
        return now

    torch.set_num_threads(t.threads)
    registry = registry_for(settings, say)
    if registry.clean_staging():
        say("removed staging leftovers of an interrupted publish")
    champion_version = registry.reconcile()
    if champion_version is None:
        raise RuntimeError(f"{t.model}: Triton serves no version (run `streamrec model init` and load it)")
    champion_folder = registry.model_dir / str(champion_version)
    champion, tokenizer, champion_meta = load_folder(champion_folder)
    start_offsets = champion_meta.lineage.get("offsets") or None
    mark = time.monotonic()

    batch = consume.read_new_events(settings.bootstrap_servers, t.group_id, start_offsets, max_events=t.max_events)
    mark = lap("consume_s", mark)
    result = CycleResult(status="skipped", champion=champion_version, events_used=len(batch.events), unreadable=len(batch.unreadable),
                         duplicates=batch.duplicates, offsets=batch.end, timings=timings)
    if len(batch.events) < t.min_events:
        result.reason = f"{len(batch.events)} new events < min_events {t.min_events}"
        result.duration_s = round(time.monotonic() - started, 3)
        return result

    context = consume.read_context(settings.bootstrap_servers, t.group_id, batch.start, t.context_events)
    # A batch a streams worker repeated after a crash can straddle the previous cycle's end.
    learnt = {event.event_id for event in context}
    repeated = sum(event.event_id in learnt for event in batch.events)
    if repeated:
        batch.events = [event for event in batch.events if event.event_id not in learnt]
        result.events_used, result.duplicates = len(batch.events), result.duplicates + repeated
    known = pairs.catalog_texts(settings.redis_url, [e.item_id for e in (*context, *batch.events)])
    fresh, stats = pairs.build_examples(batch.events, known, context=context)
    train_new, held_out = pairs.split_by_time(fresh, t.holdout_fraction, t.holdout_max)
    rng = np.random.default_rng(seed + champion_version)
    buffer = ReplayBuffer.load(state_dir(settings) / "replay.json", t.replay_capacity)
    replayed = buffer.sample(int(len(train_new) * t.replay_ratio), rng)
    result.examples = {"new": len(fresh), "train_new": len(train_new), "held_out": len(held_out), "replayed": len(replayed),
                       "unknown_item_events": stats.unknown_item_events, "context_events": len(context)}
    if len(train_new) < 2 or not held_out:
        result.reason = f"{len(fresh)} examples from {len(batch.events)} events: too few to train and judge"
        result.duration_s = round(time.monotonic() - started, 3)
        return result

    table = pairs.ItemTable()
    for source, infos in ((fresh + replayed, {**buffer.items, **known}),):
        for example in source:
            for item in (*example.history, example.target):
                table.add(item, infos[item])
    training = [table.example(e) for e in train_new + replayed]
    judged = [table.example(e) for e in held_out]
    sequences = [(*e.history, e.target) for e in training]
    data = TrainingTexts(table.texts, table.titles, CoVisitation(sequences, len(table)), Popularity(sequences, len(table)))
    mark = lap("pairs_s", mark)

    challenger = copy.deepcopy(champion)
    config = LearnConfig(steps=t.steps, max_minutes=t.max_minutes, batch_size=t.batch_size, lr=t.lr,
                         max_length=t.max_length, lora=t.lora, lora_rank=t.lora_rank, seed=seed)
    report = train(challenger, tokenizer, training, data, config, say)
    mark = lap("train_s", mark)

    lists = gate.candidate_lists(judged, len(table), data.covisit, data.popularity, t.eval_candidates, seed=seed)
    figures = {
        name: gate.evaluate(model, tokenizer, judged, lists, table.texts, table.titles, max_length=t.max_length)
        for name, model in (("challenger", challenger), ("champion", champion))
    }
    decision = gate.decide(figures["challenger"], figures["champion"], t.gate_tolerance)
    result.gate = decision.to_dict()
    mark = lap("gate_s", mark)
    entry = {"ts": time.time(), "model": t.model, "champion": champion_version, "passed": decision.passed,
             "gate": result.gate, "events_used": len(batch.events), "examples": result.examples,
             "offsets": {"start": batch.start, "end": batch.end}}
    say(f"gate: challenger {_fmt(figures['challenger'])} vs champion {_fmt(figures['champion'])} -> "
        f"{'pass' if decision.passed else 'reject: ' + '; '.join(decision.reasons)}")
    if not decision.passed:
        _record(settings, {**entry, "status": "rejected"})
        result.status, result.reason = "rejected", "; ".join(decision.reasons)
        result.duration_s = round(time.monotonic() - started, 3)
        return result

    metadata = VersionMetadata(
        kind="scorer",
        base=f"{t.model} {champion_version} fine-tuned on {len(batch.events):,} new events",
        max_length=champion_meta.max_length,
        metrics={f"holdout_{k}": float(v) for k, v in figures["challenger"].items()},
        lineage={"parent": champion_version, "offsets": batch.end, "start_offsets": batch.start,
                 "events_used": len(batch.events), "examples": result.examples, "gate": result.gate,
                 "recipe": "trainer.incremental.learn.train_challenger" + (" (LoRA merged)" if t.lora else ""),
                 "train": getattr(report, "to_dict", lambda: {})(), "group_id": t.group_id},
    )
    dead_letter(settings, batch.unreadable)
    try:
        version = registry.publish(challenger, tokenizer, metadata)
    except VersionRejected as error:
        _record(settings, {**entry, "status": "failed", "reason": str(error)})
        result.status, result.reason = "failed", str(error)
        result.duration_s = round(time.monotonic() - started, 3)
        return result
    mark = lap("publish_s", mark)
    result.status, result.version = "published", version
    result.duration_s = round(time.monotonic() - started, 3)
    _record(settings, {**entry, "status": "published", "version": version})
    announce(settings, ModelUpdate(event="published", model=t.model, version=version, metrics=metadata.metrics,
                                   gate=result.gate, offsets=batch.end, events_used=len(batch.events),
                                   duration_s=result.duration_s, parent=champion_version))
    consume.commit_offsets(settings.bootstrap_servers, t.group_id, batch.end)
    buffer.add(fresh, known, rng)
    buffer.save(state_dir(settings) / "replay.json")
    pruned = registry.prune(t.keep_versions)
    if pruned:
        say(f"pruned versions {pruned}")
    lap("after_publish_s", mark)
    return result


def _fmt(figures: dict[str, float]) -> str:
    return " ".join(f"{name} {figures[name]:.4f}" for name in gate.METRICS)
