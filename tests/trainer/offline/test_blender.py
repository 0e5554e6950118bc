"""The blender fit, the offline signals and the offline pipeline: pure logic, no stack, no torch."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import numpy as np
import pytest

from streamrec.ranking.blender import FEATURES, Blender, fit
from trainer.offline.blender_fit import fit_on_examples, logged_rows, user_sequences
from streamrec.ranking.item_index import ItemIndex
from trainer.offline.pipeline import (
    OfflinePipeline,
    OfflineSignals,
    profile_from_history,
    rank_in_list,
    sequence_pairs,
)
from streamrec.datasets.sequences import Example
from streamrec.settings import RecsSettings, StreamsSettings
from streamrec.store.catalog import CatalogRecord
from streamrec.store.profile import UserProfile
from streamrec.profile_fold import apply_interaction

STREAMS = StreamsSettings()


def test_fit_recovers_a_known_weight_direction() -> None:
    rng = np.random.default_rng(1)
    true = np.array([1.5, -1.0, 0.8, 0.0, 0.6, -0.4])
    rows = rng.normal(size=(20_000, len(FEATURES)))
    labels = (rng.random(len(rows)) < 1 / (1 + np.exp(-(rows @ true - 1.0)))).astype(np.float32)
    blender = fit(rows, labels, fitted_on={"data": "synthetic"})
    found = blender.vector.astype(np.float64)
    assert found @ true / (np.linalg.norm(found) * np.linalg.norm(true)) > 0.99
    assert blender.weights["scorer"] == pytest.approx(1.5, abs=0.15)
    assert blender.weights["popularity"] == pytest.approx(0.0, abs=0.1)
    assert blender.bias == pytest.approx(-1.0, abs=0.1)
    assert blender.fitted_on == {"data": "synthetic"}


def test_fit_saves_and_loads(tmp_path) -> None:
    blender = Blender(weights={"covisit": 0.5, "scorer": 1.25}, bias=-2.0, fitted_on={"rows": 3})
    blender.save(tmp_path / "w.json")
    assert Blender.load(tmp_path / "w.json") == blender


SEQUENCES = [["a", "b", "c"], ["b", "c"], ["d", "d", "a"]]


def test_offline_covisit_counts_pairs_like_the_streams_worker() -> None:
    signals = OfflineSignals.from_sequences(SEQUENCES, STREAMS)
    # a-b once, a-c once, b-c twice (both sequences), a-d twice (d occurs twice before a).
    [b, a, c, d] = asyncio.run(signals.covisit(["b", "a", "c", "d"], per_item=10))
    assert b == [("c", 2.0), ("a", 1.0)]
    assert a == [("d", 2.0), ("c", 1.0), ("b", 1.0)]  # ties: descending member, as ZREVRANGE
    assert c == [("b", 2.0), ("a", 1.0)]
    assert d == [("a", 2.0)]  # an item never pairs with itself
    assert asyncio.run(signals.covisit(["a"], per_item=1)) == [[("d", 2.0)]]
    assert asyncio.run(signals.trending(3)) == ["d", "c", "b"]  # every item occurs twice: ties by member
    assert asyncio.run(signals.trending(10)) == ["d", "c", "b", "a"]


def test_offline_covisit_pairs_only_within_the_worker_history() -> None:
    short = StreamsSettings(covisit_history=1)
    assert sequence_pairs(["a", "b", "c"], short) == {("b", "a"): 1, ("a", "b"): 1, ("c", "b"): 1, ("b", "c"): 1}
    assert sequence_pairs(["a", "b", "c"], STREAMS, start=2) == {("c", "a"): 1, ("a", "c"): 1, ("c", "b"): 1, ("b", "c"): 1}


def test_offline_folds_match_the_streams_worker() -> None:
    """Offline pairs and profiles are the streams worker's fold, wired as the worker applies it."""
    rng = np.random.default_rng(3)
    index = _index(12)
    settings = StreamsSettings(covisit_history=4)
    for _ in range(20):
        sequence = [f"i{k}" for k in rng.integers(0, 12, size=rng.integers(1, 15))]
        worker, visits, pairs = UserProfile(), UserProfile(), Counter()
        for position, item_id in enumerate(sequence):
            # Co-visits: one visit (a second apart); the profile: a click a day, as the offline profile.
            applied = apply_interaction(visits, user_id="u", event_type="click", item_id=item_id, ts=1_000 * (position + 1),
                                        category=None, embedding=None, settings=settings)
            pairs.update((item_id, n) for n in applied.covisits)
            pairs.update((n, item_id) for n in applied.covisits)
            apply_interaction(
                worker, user_id="u", event_type="click", item_id=item_id, ts=1_000 + position * 86_400_000,
                category=index.info(item_id).category, embedding=index.vectors([item_id])[0], settings=settings,
            )
        assert sequence_pairs(sequence, settings) == pairs
        offline = profile_from_history(sequence, index, settings)
        assert [i.item_id for i in offline.recent] == [i.item_id for i in worker.recent]
        assert offline.affinities.keys() == worker.affinities.keys()
        for category, value in worker.affinities.items():
            assert offline.affinities[category] == pytest.approx(value, rel=1e-6)
        np.testing.assert_allclose(offline.vector.astype(np.float32), worker.vector.astype(np.float32), atol=2e-2)


def test_offline_signals_before_hide_the_users_later_events() -> None:
    signals = OfflineSignals.from_sequences(SEQUENCES, STREAMS)
    prefix = signals.before(["a", "b", "c"], 2, STREAMS)  # the first user's row "a b -> c"
    [b, a] = asyncio.run(prefix.covisit(["b", "a"], per_item=10))
    assert b == [("c", 1.0), ("a", 1.0)]
    assert a == [("d", 2.0), ("b", 1.0)]
    assert asyncio.run(prefix.trending(10)) == ["d", "b", "a", "c"]
    assert asyncio.run(signals.covisit(["b"], per_item=10)) == [[("c", 2.0), ("a", 1.0)]]  # the base is untouched


def _index(n_items: int, seed: int = 0) -> ItemIndex:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n_items, 8)).astype(np.float32)
    return ItemIndex.from_records(
        CatalogRecord(item_id=f"i{k}", title=f"item {k}", category_path=("root", f"cat{k % 3}"), brand=None, price=None,
                      currency=None, available=True, updated_ts=0, embedding=(v / np.linalg.norm(v)).astype(np.float16))
        for k, v in enumerate(vectors)
    )


def test_in_memory_index_and_profile() -> None:
    index = _index(12)
    assert len(index) == 12 and index.dim == 8
    assert index.info("i4").category == "cat1"
    profile = profile_from_history(["i0", "i3", "i1"], index, STREAMS)
    assert [r.item_id for r in profile.recent] == ["i0", "i3", "i1"]
    assert [r.ts for r in profile.recent] == sorted(r.ts for r in profile.recent)
    assert set(profile.affinities) == {"cat0", "cat1"}
    assert profile.affinities["cat0"] > profile.affinities["cat1"]  # two items, the older decayed
    expected = sum(0.5 ** (age / 7) * index.vectors([item])[0] for age, item in enumerate(["i1", "i3", "i0"]))
    np.testing.assert_allclose(profile.vector.astype(np.float32), expected, atol=1e-2)
    assert rank_in_list(["x", "y"], "y") == 2.0 and math.isinf(rank_in_list(["x"], "y"))


def _pipeline(blender: Blender, sequences: list[list[str]]) -> OfflinePipeline:
    recs = RecsSettings(scorer_enabled=False, k=5)
    return OfflinePipeline(_index(12), OfflineSignals.from_sequences(sequences, STREAMS), None, blender, recs, STREAMS)


def test_offline_pipeline_end_to_end() -> None:
    sequences = [["i0", "i1", "i2"], ["i1", "i2"], ["i1", "i2", "i5"], ["i7", "i1", "i9"]]
    pipeline = _pipeline(Blender(weights={"covisit": 5.0}), sequences)
    items = asyncio.run(pipeline.recommend(["i0", "i1"], k=5))
    assert len(items) == 5 and len(set(items)) == 5
    assert not {"i0", "i1"} & set(items)  # the history is never recommended
    assert items[0] == "i2"  # co-visited with i1 three times, with i0 once
    assert set(items) <= {f"i{k}" for k in range(12)}
    # An unknown user's list is popularity only, and still complete.
    assert asyncio.run(pipeline.recommend([], k=3))[0] == "i1"


def test_logged_rows_label_the_next_item_and_the_fit_learns_covisit() -> None:
    sequences = [["i0", "i1", "i2"], ["i3", "i1", "i2"], ["i4", "i1", "i2"], ["i6", "i5", "i8"], ["i9", "i5", "i8"]]
    examples = [Example(f"u{n}", (int(s[0][1:]), int(s[1][1:])), int(s[2][1:])) for n, s in enumerate(sequences)]
    item_ids = [f"i{k}" for k in range(12)]
    users = user_sequences(examples, item_ids)
    pipeline = _pipeline(Blender(weights={}), list(users.values()))
    data = asyncio.run(logged_rows(pipeline, examples, item_ids, users))
    assert data.seen == 5 and data.lists == 5 and data.labels.sum() == 5
    assert data.rows.shape == (len(data.labels), len(FEATURES))
    assert (data.rows[:, 0] == 0).all()  # no scorer
    # The next item is co-visited by other users only (the row's own pair is hidden), so covisit > 0 there.
    assert (data.rows[data.labels == 1, 1] > 0).all()
    blender = fit_on_examples(pipeline, examples, item_ids, sequences=users, rounds=1, say=lambda _: None)
    assert blender.weights["covisit"] > 0
    assert blender.fitted_on["rows_with_target_in_candidates"] == 5


def _served(index: ItemIndex, sequences: list[list[str]]):
    from streamrec.model.bootstrap import first_sequence_model

    ids = [f"i{k}" for k in range(12)]
    return first_sequence_model(ids, index.vectors(ids), sequences, tiny=True)


def test_the_sequence_model_retrieves_and_scores_every_candidate() -> None:
    """Its top K joins the candidates (source ``sequence``) and every candidate gets its score."""
    from trainer.offline.pipeline import InProcessSequenceScorer

    sequences = [["i0", "i1", "i2"], ["i1", "i2", "i5"], ["i7", "i1", "i9"], ["i3", "i4", "i6"]]
    index = _index(12)
    scorer = InProcessSequenceScorer(_served(index, sequences))
    recs = RecsSettings(k=5, sequence_candidates=11, vector_candidates=0, trending_candidates=0, categories_top=0)
    pipeline = OfflinePipeline(index, OfflineSignals.from_sequences(sequences, STREAMS), scorer,
                               Blender(weights={"scorer": 1.0}), recs, STREAMS)
    profile = profile_from_history(["i0", "i1"], index, STREAMS)
    outcome = asyncio.run(pipeline.recommender().recommend("u", k=5, profile=profile, profile_known=True, exclude=["i0", "i1"]))
    lists = outcome.recommendations
    assert not lists.degraded and lists.model_version == "bert_scorer"
    assert outcome.scored == outcome.candidates == 10  # every item but the history, most found by the model only
    assert any(sources == {"sequence"} for sources in outcome.candidate_sources)
    assert (outcome.rows[:, 0] != 0).any()
    expected = scorer.served.rank([["i0", "i1"]], k=10).top_items[0]
    assert [item.item_id for item in lists.items] == expected[:5]  # the blend is the model's score alone here


class _BrokenScorer:
    model = "broken"

    async def rank(self, *args):
        raise RuntimeError("Triton is away")


def test_a_failing_scorer_degrades_the_list_to_the_signals() -> None:
    sequences = [["i0", "i1", "i2"], ["i1", "i2", "i5"]]
    pipeline = OfflinePipeline(_index(12), OfflineSignals.from_sequences(sequences, STREAMS), _BrokenScorer(),
                               Blender(weights={"covisit": 1.0, "scorer": 1.0}), RecsSettings(k=3), STREAMS)
    profile = profile_from_history(["i1"], pipeline.index, STREAMS)
    outcome = asyncio.run(pipeline.recommender().recommend("u", k=3, profile=profile, profile_known=True))
    assert outcome.recommendations.degraded and "Triton is away" in outcome.recommendations.degraded_reason
    assert outcome.recommendations.model_version == "signals" and outcome.recommendations.items
    assert (outcome.rows[:, 0] == 0).all()
