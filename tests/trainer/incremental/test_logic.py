"""Pure logic of the trainer: pairs, time split, gate metrics and decision, replay buffer, durations."""

from __future__ import annotations

import numpy as np
import pytest
import typer

from trainer.cli import parse_interval
from trainer.incremental.consume import AcceptedInteraction
from trainer.incremental.gate import decide, rank_metrics
from trainer.incremental.pairs import ItemText, TimedExample, build_examples, split_by_time
from trainer.incremental.replay_buffer import ReplayBuffer


def event(user: str, item: str, ts: int, type_: str = "click", offset: int = 0) -> AcceptedInteraction:
    return AcceptedInteraction(f"{user}-{item}-{ts}", user, item, type_, ts, "events.accepted", 0, offset)


KNOWN = {name: ItemText(name.upper(), f"{name} text") for name in "abcdef"}


def test_examples_are_the_context_before_each_click_or_purchase():
    events = [event("u", "a", 1), event("u", "b", 2, "add_to_cart"), event("u", "c", 3, "purchase"),
              event("v", "d", 5), event("u", "zzz", 4), event("v", "e", 6)]
    examples, stats = build_examples(events, KNOWN)
    assert [(e.user, e.history, e.target) for e in examples] == [("u", ("a", "b"), "c"), ("v", ("d",), "e")]
    assert stats.unknown_item_events == 1  # an item the catalog does not know is dropped
    # an add-to-cart is context, never a target; the first event has no context
    assert all(e.target not in ("a", "b", "d") for e in examples)


def test_events_are_ordered_by_time_not_arrival():
    events = [event("u", "b", 20), event("u", "a", 10), event("u", "c", 30)]
    examples, _ = build_examples(events, KNOWN)
    assert [(e.history, e.target) for e in examples] == [(("a",), "b"), (("a", "b"), "c")]


def test_the_held_out_slice_is_the_newest_by_time():
    examples = [TimedExample(f"u{i}", ("a",), "b", ts) for i, ts in enumerate([50, 10, 40, 20, 30])]
    train, held_out = split_by_time(examples, 0.4)
    assert [e.ts for e in train] == [10, 20, 30]
    assert [e.ts for e in held_out] == [40, 50]
    train, held_out = split_by_time(examples, 0.4, holdout_max=1)
    assert [e.ts for e in train] == [10, 20, 30, 40] and [e.ts for e in held_out] == [50]


def test_rank_metrics_of_perfect_worst_and_constant_scorers():
    perfect = rank_metrics([np.array([5.0, 1.0, 0.0, -1.0])] * 3)
    assert perfect == {"ndcg10": 1.0, "hr10": 1.0, "auc": 1.0, "examples": 3}
    worst = rank_metrics([np.array([-5.0, *range(20)])])
    assert worst["hr10"] == 0.0 and worst["ndcg10"] == 0.0 and worst["auc"] == 0.0
    constant = rank_metrics([np.zeros(20)])  # ties count against the model
    assert constant["hr10"] == 0.0 and constant["auc"] == 0.5
    broken = rank_metrics([np.array([np.nan, 1.0, 2.0])])
    assert broken["ndcg10"] == 0.0 and broken["auc"] == 0.0
    second = rank_metrics([np.array([1.0, 2.0, 0.0])])
    assert second["ndcg10"] == pytest.approx(1 / np.log2(3)) and second["auc"] == 0.5


def test_gate_passes_within_tolerance_and_names_every_failing_metric():
    champion = {"ndcg10": 0.30, "hr10": 0.50, "auc": 0.80}
    assert decide({"ndcg10": 0.296, "hr10": 0.50, "auc": 0.81}, champion, 0.005).passed
    rejected = decide({"ndcg10": 0.28, "hr10": 0.40, "auc": 0.81}, champion, 0.005)
    assert not rejected.passed
    assert [reason.split()[0] for reason in rejected.reasons] == ["ndcg10", "hr10"]
    assert not decide({"ndcg10": float("nan"), "hr10": 1.0, "auc": 1.0}, champion, 1.0).passed
    assert rejected.to_dict()["challenger"]["ndcg10"] == 0.28  # the figures are recorded with the decision


def test_replay_buffer_is_a_bounded_uniform_sample_that_survives_a_restart(tmp_path):
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(capacity=100)
    examples = [TimedExample(f"u{i}", ("a",), "b", i) for i in range(2000)]
    buffer.add(examples, KNOWN, rng)
    assert len(buffer) == 100 and buffer.seen == 2000
    mean_ts = np.mean([e.ts for e in buffer.examples])
    assert 700 < mean_ts < 1300  # uniform over all 2000, not the newest 100 (mean 1950)
    assert set(buffer.items) == {"a", "b"}
    buffer.save(tmp_path / "replay.json")
    again = ReplayBuffer.load(tmp_path / "replay.json", 100)
    assert again.examples == buffer.examples and again.seen == 2000 and again.items == buffer.items
    assert len(again.sample(10, rng)) == 10
    (tmp_path / "broken.json").write_text("{not json")
    assert len(ReplayBuffer.load(tmp_path / "broken.json", 100)) == 0


def test_intervals():
    assert parse_interval("5m") == 300 and parse_interval("90s") == 90 and parse_interval("1h") == 3600
    assert parse_interval("45") == 45
    for bad in ("0", "5x", "", "-1m"):
        with pytest.raises(typer.BadParameter):
            parse_interval(bad)


def test_older_context_events_give_history_but_are_never_targets():
    older = [event("u", "a", 1, "purchase"), event("u", "b", 2)]
    new = [event("u", "c", 3, "purchase"), event("w", "d", 4)]
    examples, stats = build_examples(new, KNOWN, context=older)
    assert [(e.history, e.target) for e in examples] == [(("a", "b"), "c")]
    assert stats.users == 2 and stats.events == 2
