"""One trainer cycle: new events -> user sequences -> warm-started fine-tune -> gate -> publish -> announce.

The served model is ``bert_scorer``, the sequence recommender (:mod:`streamrec.model.sequence`).
Order of effects, chosen so that a trainer killed at any point leaves serving untouched and
resumes exactly:

1. make Triton serve the newest complete version (finishes a publish a crash interrupted) and
   remove staging leftovers;
2. read the accepted events (``events.accepted``) after the offsets stored in the served
   version's metadata;
3. build each user's sequence (the history kept in the replay buffer, then the new events),
   append the new items the catalog has text embeddings for, hold out the newest slice by time,
   add the new pairs to the co-visitation counts and fine-tune a copy of the champion on the new
   and replayed sequences;
4. gate: both models rank the whole catalog for the held-out rows; append the decision, with
   its figures, to ``decisions.jsonl``;
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
from streamrec.model.artifacts import VersionMetadata, read_metadata, write_sequence_folder
from streamrec.model.registry import ModelRegistry, VersionRejected
from streamrec.model.sequence import SequenceRecommender
from streamrec.model.served_sequence import ServedSequence, load_version
from streamrec.model.updates import announce
from streamrec.producer import deliver
from streamrec.settings import Settings, TrainerSettings
from streamrec.topics import Topic
from trainer.incremental import consume, gate, sequences
from trainer.incremental.learn import FineTune, Say, add_new_pairs, fine_tune
from trainer.incremental.replay_buffer import ReplayBuffer

STATE_DIR = ".trainer"
"""Trainer state inside the model's folder (Triton ignores non-numeric folders there)."""

TrainFn = Callable[[SequenceRecommender, list[list[int]], FineTune, Say], object]
"""Fine-tunes one ensemble member in place on item-row sequences (tests swap in their own)."""


@dataclass
class CycleResult:
    status: str
    """``published`` | ``rejected`` | ``skipped`` (too few events) | ``failed`` (Triton refused it)."""
    champion: int | None
    version: int | None = None
    events_used: int = 0
    unreadable: int = 0
    """Messages on events.accepted that break its contract; dead-lettered when the cycle publishes."""
    dead_lettered: int = 0
    """Of those, the ones this cycle wrote to events.dlq (all of them once it got as far as publishing)."""
    duplicates: int = 0
    """Repeated event ids left out (in the new events, or already among the context's)."""
    counts: dict[str, int] = field(default_factory=dict)
    """Users, sequences, held-out rows, replayed sequences, items added, events skipped."""
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


def _default_train(model: SequenceRecommender, rows: list[list[int]], config: FineTune, say: Say):
    return fine_tune(model, rows, config, say=say)


def _rows(served: ServedSequence, items) -> list[int]:
    """Item ids (or steps) -> the model's rows; every one is known (sequences hold rankable items only)."""
    return [served.position[getattr(item, "item", item)] for item in items]


def _finite(served: ServedSequence) -> bool:
    return all(torch.isfinite(tensor).all() for member in served.ensemble.members
               for tensor in member.state_dict().values() if tensor.is_floating_point())


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

    def finish(status: str, reason: str = "") -> CycleResult:
        result.status, result.reason = status, reason
        result.duration_s = round(time.monotonic() - started, 3)
        return result

    torch.set_num_threads(t.threads)
    registry = registry_for(settings, say)
    if registry.clean_staging():
        say("removed staging leftovers of an interrupted publish")
    champion_version = registry.reconcile()
    if champion_version is None:
        raise RuntimeError(f"{t.model}: Triton serves no version (run `streamrec model init` and load it)")
    champion_folder = registry.model_dir / str(champion_version)
    champion_meta = read_metadata(champion_folder)
    if champion_meta.kind != "sequence":
        raise RuntimeError(f"{t.model} {champion_version} is a {champion_meta.kind} model; the trainer fine-tunes the "
                           "sequence scorer (set STREAMREC_TRAINER__MODEL and STREAMREC_RECS__SCORER_MODEL to bert_scorer)")
    champion = load_version(champion_folder)
    start_offsets = champion_meta.lineage.get("offsets") or None
    mark = time.monotonic()

    batch = consume.read_new_events(settings.kafka, t.group_id, start_offsets, max_events=t.max_events)
    mark = lap("consume_s", mark)
    result = CycleResult(status="skipped", champion=champion_version, events_used=len(batch.events), unreadable=len(batch.unreadable),
                         duplicates=batch.duplicates, offsets=batch.end, timings=timings)
    if len(batch.events) < t.min_events:
        return finish("skipped", f"{len(batch.events)} new events < min_events {t.min_events}")

    context = consume.read_context(settings.kafka, t.group_id, batch.start, t.context_events)
    # A batch a streams worker repeated after a crash can straddle the previous cycle's end.
    learnt = {event.event_id for event in context}
    repeated = sum(event.event_id in learnt for event in batch.events)
    if repeated:
        batch.events = [event for event in batch.events if event.event_id not in learnt]
        result.events_used, result.duplicates = len(batch.events), result.duplicates + repeated
    buffer = ReplayBuffer.load(state_dir(settings) / "replay.json", t.replay_capacity, champion.max_history)
    dim = champion.ensemble.members[0].items.text.shape[1]
    unknown = [e.item_id for e in (*batch.events, *context) if e.item_id not in champion.position]
    embeddings = sequences.catalog_embeddings(settings.redis, unknown, dim)
    cycle = sequences.build(batch.events, buffer.sequences, set(champion.position) | set(embeddings), context=context,
                            holdout_fraction=t.holdout_fraction, holdout_max=t.holdout_max, max_history=champion.max_history)
    rng = np.random.default_rng(seed + champion_version)
    replayed = buffer.sample(int(len(cycle.train) * t.replay_ratio), rng, exclude=set(cycle.train))
    result.counts = {"users": len(cycle.train), "new_steps": cycle.new_steps(), "held_out": len(cycle.held_out),
                     "replayed": len(replayed), "items_added": 0, "skipped_events": cycle.skipped_events,
                     "canary_events": cycle.canary_events,
                     "context_events": len(context), "buffer_users": len(buffer)}
    trainable = sum(len(steps) >= 2 for steps in cycle.train.values())
    if trainable < 2 or not cycle.held_out:
        return finish("skipped", f"{trainable} trainable sequences and {len(cycle.held_out)} held-out rows from "
                                 f"{len(batch.events)} events: too few to train and judge")

    # The champion as Triton serves it once the catalog delivered the new items: text part only.
    added = champion.add_items(list(embeddings), np.stack(list(embeddings.values()))) if embeddings else []
    result.counts["items_added"] = len(added)
    challenger = copy.deepcopy(champion)
    users = list(cycle.train)
    rows = [_rows(challenger, cycle.train[user]) for user in users] + [_rows(challenger, s) for s in replayed.values()]
    earlier = [cycle.earlier[user] for user in users] + [len(s) for s in replayed.values()]
    mark = lap("sequences_s", mark)

    config = FineTune(epochs=t.epochs, lr=t.lr, batch_size=t.batch_size, max_minutes=t.max_minutes, seed=seed)
    reports = []
    for member in challenger.ensemble.members:
        add_new_pairs(member, rows, earlier)
        reports.append(train(member, rows, config, say))
    mark = lap("train_s", mark)

    if _finite(challenger):
        decision = gate.decide(gate.row_figures(challenger, cycle.held_out), gate.row_figures(champion, cycle.held_out), t.gate_se)
    else:
        decision = gate.GateDecision(False, float("nan"), float("nan"), float("nan"), 0.0, len(cycle.held_out),
                                     ("the challenger has non-finite weights",))
    result.gate = decision.to_dict()
    mark = lap("gate_s", mark)
    entry = {"ts": time.time(), "model": t.model, "champion": champion_version, "passed": decision.passed,
             "gate": result.gate, "events_used": len(batch.events), "counts": result.counts,
             "offsets": {"start": batch.start, "end": batch.end}}
    say(f"gate: NDCG@10 challenger {decision.challenger:.4f} vs champion {decision.champion:.4f} "
        f"(SE {decision.se:.4f}, {decision.rows} rows) -> {'pass' if decision.passed else 'reject: ' + '; '.join(decision.reasons)}")
    if not decision.passed:
        _record(settings, {**entry, "status": "rejected"})
        # On the topic too, so the operations page and any consumer of model.updates see every verdict.
        announce(settings, ModelUpdate(event="rejected", model=t.model, version=champion_version, gate=result.gate,
                                       events_used=len(batch.events), parent=champion_version,
                                       duration_s=round(time.monotonic() - started, 3)))
        return finish("rejected", "; ".join(decision.reasons))

    # Judged without them; the version served from now on has read past them, so it counts them.
    held = [(*row.history, row.target) for row in cycle.held_out]
    for member in challenger.ensemble.members:
        add_new_pairs(member, [_rows(challenger, items) for items in held], [len(row.history) for row in cycle.held_out])
    metadata = VersionMetadata(
        kind="sequence",
        base=f"{t.model} {champion_version} fine-tuned on {len(batch.events):,} new events",
        max_length=champion_meta.max_length,
        metrics={"holdout_ndcg10": decision.challenger, "holdout_ndcg10_champion": decision.champion,
                 "holdout_ndcg10_se": decision.se, "holdout_rows": float(decision.rows)},
        lineage={"parent": champion_version, "offsets": batch.end, "start_offsets": batch.start,
                 "events_used": len(batch.events), "counts": result.counts, "gate": result.gate,
                 "recipe": "trainer.incremental.learn.fine_tune", "train": [getattr(r, "to_dict", lambda: {})() for r in reports],
                 "group_id": t.group_id, "items": challenger.n_items},
    )
    dead_letter(settings, batch.unreadable)
    result.dead_lettered = len(batch.unreadable)
    try:
        version = registry.publish_folder(lambda folder: write_sequence_folder(folder, challenger, metadata))
    except VersionRejected as error:
        _record(settings, {**entry, "status": "failed", "reason": str(error)})
        return finish("failed", str(error))
    mark = lap("publish_s", mark)
    result.version = version
    finish("published")
    _record(settings, {**entry, "status": "published", "version": version})
    announce(settings, ModelUpdate(event="published", model=t.model, version=version, metrics=metadata.metrics,
                                   gate=result.gate, offsets=batch.end, events_used=len(batch.events),
                                   duration_s=result.duration_s, parent=champion_version))
    consume.commit_offsets(settings.kafka, t.group_id, batch.end)
    buffer.update(cycle.full)
    buffer.save(state_dir(settings) / "replay.json")
    pruned = registry.prune(t.keep_versions)
    if pruned:
        say(f"pruned versions {pruned}")
    lap("after_publish_s", mark)
    return result

