"""Pure logic of the trainer: user sequences across cycles, the newest slice held out, the gate's
paired statistics and decision, fresh co-visitation counts, the replay buffer, durations."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import typer

from streamrec.events import CANARY_USER_PREFIX
from streamrec.model.bootstrap import first_sequence_model
from streamrec.model.sequence import CPU_CONFIG, SequenceRecommender, covisit_counts
from tests.conftest import tiny_catalog
from trainer.cli import parse_interval
from trainer.incremental.consume import AcceptedInteraction
from trainer.incremental.gate import decide, row_figures
from trainer.incremental.learn import FineTune, add_new_pairs, fine_tune
from trainer.incremental.replay_buffer import ReplayBuffer
from trainer.incremental.sequences import HeldOut, Step, build, paired_ndcg
from trainer.offline.sequence_eval import row_ndcg10

RANKABLE = set("abcdefgh")


def event(user: str, item: str, ts: int, type_: str = "click", offset: int = 0) -> AcceptedInteraction:
    return AcceptedInteraction(f"{user}-{item}-{ts}", user, item, type_, ts, "events.accepted", 0, offset)


def cycle(events, earlier=None, **options):
    settings = dict(holdout_fraction=0.2, holdout_max=100, max_history=50)
    return build(events, earlier or {}, RANKABLE, **{**settings, **options})


def items(steps) -> list[str]:
    return [step.item for step in steps]


def test_sequences_are_by_event_time_with_unrankable_items_and_repeats_left_out():
    events = [event("u", "b", 20), event("u", "a", 10), event("u", "zzz", 15), event("u", "b", 25, "purchase"),
              event("u", "c", 30), event("v", "d", 5)]
    built = cycle(events, holdout_fraction=0.01)
    assert items(built.full["u"]) == ["a", "b", "c"]  # b clicked then bought: one step
    assert built.skipped_events == 1 and built.earlier == {"u": 0, "v": 0}
    assert built.full["u"][1].type == "click"


def test_a_users_history_spans_cycles():
    earlier = {"u": [Step("a", "click", 1), Step("b", "purchase", 2)], "w": [Step("e", "click", 1)]}
    built = cycle([event("u", "c", 10), event("u", "d", 11), event("v", "f", 12), event("v", "g", 13)], earlier,
                  holdout_fraction=0.01)
    assert items(built.full["u"]) == ["a", "b", "c", "d"] and built.earlier["u"] == 2
    assert "w" not in built.train  # no new events: not this cycle's (the buffer replays it)
    assert built.new_steps() == 4 - 1  # the held-out step is not trained on
    # without a kept history, the events re-read from Kafka as context give it
    context = [event("v", "a", 1), event("v", "b", 2), event("u", "h", 3)]
    built = cycle([event("u", "c", 10), event("v", "f", 12)], earlier, context=context, holdout_fraction=0.01)
    assert items(built.full["v"]) == ["a", "b", "f"] and items(built.full["u"]) == ["a", "b", "c"]


def test_canary_users_are_left_out_of_the_sequences():
    canary = f"{CANARY_USER_PREFIX}probe"
    events = [event("u", "a", 10), event(canary, "a", 11), event("u", "b", 12), event(canary, "c", 13), event("v", "d", 14),
              event("v", "e", 15)]
    built = cycle(events, context=[event(canary, "h", 1)], holdout_fraction=0.5)
    assert canary not in built.train and canary not in built.full and built.canary_events == 2
    assert all(row.user != canary for row in built.held_out) and built.skipped_events == 0
    without = cycle([e for e in events if e.user_id != canary], holdout_fraction=0.5)
    assert (built.train, built.full, built.held_out, built.earlier) == (without.train, without.full, without.held_out, without.earlier)
    assert items(built.full["u"]) == ["a", "b"] and items(built.full["v"]) == ["d", "e"]


def test_the_newest_slice_is_held_out_and_not_trained_on():
    events = [event(f"u{n}", item, 100 * n + t) for n in range(10) for t, item in enumerate("abc")]
    built = cycle(events, holdout_fraction=0.2)
    # the newest 20% of the 30 events are u8's and u9's: their last events are held out
    assert [(row.user, row.history, row.target) for row in built.held_out] == [("u8", ("a", "b"), "c"), ("u9", ("a", "b"), "c")]
    assert items(built.train["u9"]) == ["a", "b"] and items(built.full["u9"]) == ["a", "b", "c"]
    assert items(built.train["u0"]) == ["a", "b", "c"]
    assert len(cycle(events, holdout_fraction=0.2, holdout_max=1).held_out) == 1
    # a user with one item has no history to predict from
    assert cycle([event("solo", "a", 5)], holdout_fraction=0.5).held_out == []


def test_row_ndcg_and_the_paired_standard_error():
    assert row_ndcg10(np.array([1, 3, 10, 11, np.inf])).tolist() == pytest.approx([1.0, 0.5, 1 / np.log2(11), 0.0, 0.0])
    a = np.array([1.0, 0.5, 0.0, 0.0])
    stats = paired_ndcg(a, a)
    assert stats["se"] == 0.0 and stats["difference"] == 0.0 and stats["rows"] == 4
    stats = paired_ndcg(np.array([1.0, 0.0, 0.5, 0.5]), np.array([0.0, 0.0, 0.5, 0.0]))
    difference = np.array([1.0, 0.0, 0.0, 0.5])
    assert stats["se"] == pytest.approx(difference.std(ddof=1) / 2)
    assert stats["challenger"] == 0.5 and stats["champion"] == 0.125


def test_gate_passes_within_one_standard_error_and_records_both_figures():
    rng = np.random.default_rng(0)
    champion = rng.random(400)
    assert decide(champion, champion, 1.0).passed  # equal: passes with zero tolerance
    noisy = champion + rng.normal(-0.002, 0.05, 400)  # a bit worse, well within one SE
    decision = decide(noisy, champion, 1.0)
    assert decision.passed and decision.se > 0 and decision.tolerance == decision.se
    worse = decide(champion - 0.05, champion, 1.0)
    assert not worse.passed and worse.reasons[0].startswith("ndcg10")
    recorded = worse.to_dict()
    assert {"challenger", "champion", "se", "tolerance", "rows", "passed"} <= set(recorded)
    assert recorded["champion"] == pytest.approx(champion.mean())
    assert not decide(np.zeros(0), np.zeros(0), 1.0).passed


def test_row_figures_rank_the_whole_catalog_with_the_history_removed():
    ids, text, _ = tiny_catalog()
    served = first_sequence_model(ids, text, [], tiny=True)
    served.add_items(["twin"], text[[3]])  # reads exactly like item 3: the untrained model's text signals rank it first
    rows = [HeldOut("u", (ids[1], ids[2], ids[3]), "twin", 0), HeldOut("v", (ids[1], ids[3]), ids[1], 0)]
    figures = row_figures(served, rows)
    assert figures[0] == 1.0  # item 3 itself would tie, but it is the user's own: removed
    assert figures[1] == 0.0  # a target inside its own history is a miss


def test_new_pairs_are_added_to_the_counts_once():
    config = replace(CPU_CONFIG, hidden=16, intermediate=32)
    old = [[0, 1, 2]]
    model = SequenceRecommender(config, torch.randn(6, 8), torch.from_numpy(covisit_counts(old, 6)))
    # the user's sequence continues: 0 1 2 were counted, 3 4 are new
    add_new_pairs(model, [[0, 1, 2, 3, 4]], [3])
    expected = covisit_counts([[0, 1, 2, 3, 4]], 6)
    torch.testing.assert_close(model.covisit, torch.from_numpy(expected))
    torch.testing.assert_close(model.covisit_t, model.covisit.t())


def test_fine_tuning_warm_starts_and_learns_the_sequences():
    ids, text, _ = tiny_catalog()
    served = first_sequence_model(ids, text, [], tiny=True)
    model = served.ensemble.members[0]
    rows = [[0, 1, 2, 3], [4, 5, 6, 7]] * 8
    before = model.score([[0, 1, 2]])[0, 3].item() - model.score([[0, 1, 2]])[0].logsumexp(0).item()
    report = fine_tune(model, rows, FineTune(epochs=20, lr=1e-2, batch_size=8, max_minutes=1.0))
    after = model.score([[0, 1, 2]])[0, 3].item() - model.score([[0, 1, 2]])[0].logsumexp(0).item()
    assert report.steps == 40 and report.last_loss < report.first_loss
    assert after > before and not model.training


def test_replay_buffer_keeps_the_most_recent_users_and_survives_a_restart(tmp_path):
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(capacity=3, max_steps=2)
    buffer.update({f"u{n}": [Step("a", "click", n), Step("b", "click", n + 1), Step("c", "click", n + 2)] for n in range(5)})
    assert sorted(buffer.sequences) == ["u2", "u3", "u4"]  # the most recently active
    assert items(buffer.sequences["u4"]) == ["b", "c"]  # the newest steps
    buffer.update({"u0": [Step("d", "purchase", 100)]})
    assert "u0" in buffer.sequences and "u2" not in buffer.sequences
    assert set(buffer.sample(5, rng, exclude={"u3"})) == {"u4"}  # one-step sequences are not replayed
    buffer.save(tmp_path / "replay.json")
    again = ReplayBuffer.load(tmp_path / "replay.json", 3, 2)
    assert again.sequences == buffer.sequences
    (tmp_path / "broken.json").write_text("{not json")
    assert len(ReplayBuffer.load(tmp_path / "broken.json", 3)) == 0


def test_intervals():
    assert parse_interval("5m") == 300 and parse_interval("90s") == 90 and parse_interval("1h") == 3600
    assert parse_interval("45") == 45
    for bad in ("0", "5x", "", "-1m"):
        with pytest.raises(typer.BadParameter):
            parse_interval(bad)
