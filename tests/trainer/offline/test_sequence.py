"""The sequence recommender, its trainer and its evaluation protocol, on tiny synthetic data."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from streamrec.datasets.sequences import Example
from streamrec.model.sequence import (
    CPU_CONFIG,
    GPU_CONFIG,
    ID_ONLY_CONFIG,
    PAD,
    Ensemble,
    SequenceConfig,
    SequenceRecommender,
    covisit_counts,
    grow_text_neighbours,
    load_ensemble,
    recent_items,
    save_ensemble,
    spread_kernel_t,
    text_neighbours,
)
from trainer.offline.baselines import CoVisitation
from trainer.offline.sequence_eval import build_protocol, evaluate, target_ranks
from trainer.offline.sequence_train import (
    TrainConfig,
    make_batch,
    own_covisit,
    recent_at,
    sampled_softmax_loss,
    train_model,
)

TINY = SequenceConfig(hidden=16, layers=1, heads=2, intermediate=32, max_history=8, dropout=0.1,
                      attention_dropout=0.1, recent=3)


def topic_catalog(topics: int = 4, per_topic: int = 10, dim: int = 24, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Item text vectors clustered by topic, and each item's topic."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(topics, dim))
    topic = np.repeat(np.arange(topics), per_topic)
    text = centres[topic] + 0.3 * rng.normal(size=(len(topic), dim))
    return torch.as_tensor(text, dtype=torch.float32), topic


def topic_sequences(topic: np.ndarray, users: int = 120, length: int = 6, seed: int = 1) -> list[tuple[int, ...]]:
    """Each user buys items of one topic."""
    rng = np.random.default_rng(seed)
    out = []
    for user in range(users):
        pool = np.flatnonzero(topic == user % (topic.max() + 1))
        out.append(tuple(int(i) for i in rng.choice(pool, size=length, replace=False)))
    return out


# -- protocol -----------------------------------------------------------------------------------------


def test_protocol_fits_on_histories_only_and_holds_back_the_last_items():
    train = [Example("a", (1,), 2), Example("a", (1, 2), 3), Example("b", (4,), 5), Example("c", (6,), 7)]
    evaluation = [Example("a", (1, 2, 3), 9), Example("b", (4, 5), 8)]
    protocol = build_protocol(train, evaluation)
    fitted = protocol.evaluation.fit_sequences
    assert sorted(fitted) == [(1, 2, 3), (4, 5), (6, 7)]
    assert not {9, 8} & {item for sequence in fitted for item in sequence}, "an evaluation target leaked"
    held = {row.history: row.target for row in protocol.selection.rows}
    assert held == {(1, 2): 3, (4,): 5, (6,): 7}
    assert sorted(protocol.selection.fit_sequences) == [(1, 2), (4,), (6,)]


def test_protocol_refuses_files_that_disagree():
    with pytest.raises(ValueError, match="prefix"):
        build_protocol([Example("a", (1,), 2)], [Example("a", (1, 3), 4)])


def test_ranks_remove_the_history_and_break_ties_the_same_way_for_everyone():
    rows = [Example("u", (0,), 1), Example("v", (2,), 2)]
    scores = np.array([[5.0, 1.0, 1.0, 1.0], [0.0, 0.0, 9.0, 0.0]])
    removed = target_ranks(scores, rows, remove_history=True)
    kept = target_ranks(scores, rows, remove_history=False)
    assert removed[1] == np.inf and kept[1] == 1.0  # target in its own history: a miss when removed
    assert kept[0] == removed[0] + 1  # item 0 out-scores the target only while it is kept
    assert evaluate(scores, rows)["hr10"] == 0.5


# -- co-visitation, leave-user-out -----------------------------------------------------------------


def test_counts_match_the_covisitation_baseline():
    sequences = [(0, 1, 2, 1, 3), (2, 3, 4), (4, 0)]
    forward = covisit_counts(sequences, 5, window=3)
    baseline = CoVisitation(sequences, 5, window=3, backward=0.5)
    np.testing.assert_allclose(forward + 0.5 * forward.T, baseline.weights, rtol=1e-6)


def test_own_covisit_leaves_exactly_the_user_out():
    """Counts over everyone minus a user's own share == counts over everyone else, for every signal."""
    rng = np.random.default_rng(3)
    n_items = 7
    sequences = [tuple(int(i) for i in rng.integers(0, n_items, size=rng.integers(2, 9))) for _ in range(6)]
    config = replace(TINY, recent=4)
    everyone = SequenceRecommender(config, torch.randn(n_items, 8), torch.from_numpy(covisit_counts(sequences, n_items)))
    full = torch.full((len(sequences), max(map(len, sequences))), PAD, dtype=torch.long)
    for b, sequence in enumerate(sequences):
        full[b, : len(sequence)] = torch.as_tensor(sequence)
    rows = torch.as_tensor([b for b, s in enumerate(sequences) for _ in range(len(s))])
    anchors = torch.as_tensor([t for s in sequences for t in range(len(s))])
    recent = recent_at(full, rows, anchors, config.recent)
    left_out = everyone.covisit_signals(recent) - own_covisit(full, rows, anchors, config, n_items)
    for m, (b, t) in enumerate(zip(rows.tolist(), anchors.tolist())):
        others = [s for i, s in enumerate(sequences) if i != b]
        alone = SequenceRecommender(config, torch.randn(n_items, 8), torch.from_numpy(covisit_counts(others, n_items)))
        expected = alone.covisit_signals(recent[m : m + 1])[0]
        torch.testing.assert_close(left_out[m], expected, atol=1e-5, rtol=1e-5)


# -- batches and losses --------------------------------------------------------------------------


def test_causal_batch_predicts_each_next_item_from_its_prefix():
    batch = make_batch([(3, 4, 5), (6, 7)], TINY, np.random.default_rng(0))
    assert batch.targets.tolist() == [4, 5, 7]
    assert batch.inputs[0].tolist() == [3, 4] and batch.inputs[1].tolist() == [6, PAD]
    assert batch.full[batch.rows, batch.anchors].tolist() == [3, 4, 6]  # newest history item of each row


def test_cloze_batch_predicts_masked_items():
    config = replace(TINY, masking="cloze", mask_prob=0.5)
    batch = make_batch([(3, 4, 5, 6), (7, 8)], config, np.random.default_rng(0))
    assert len(batch.targets) >= 2
    for row, slot, target in zip(batch.rows.tolist(), batch.slots.tolist(), batch.targets.tolist()):
        assert batch.inputs[row, slot] < 0 and batch.full[row, slot] == target


def test_sampled_softmax_with_logq_approaches_full_softmax():
    torch.manual_seed(0)
    n_items, rows, k = 50, 64, 20000
    logits = torch.randn(rows, n_items) * 2
    targets = torch.randint(0, n_items, (rows,))
    full = torch.nn.functional.cross_entropy(logits, targets)
    proposal = torch.arange(1, n_items + 1, dtype=torch.float32) ** 2  # skewed, like popularity
    proposal /= proposal.sum()
    drawn = torch.multinomial(proposal, k, replacement=True)
    negative = logits[:, drawn]
    hits = drawn.view(1, -1) == targets.view(-1, 1)
    positive = logits.gather(1, targets.view(-1, 1)).squeeze(1)
    corrected = sampled_softmax_loss(positive, negative, proposal.log()[drawn], hits)
    uncorrected = sampled_softmax_loss(positive, negative, torch.full((k,), -np.log(k)), hits)
    assert abs(corrected.item() - full.item()) < 0.05
    assert abs(uncorrected.item() - full.item()) > 0.3


def test_sampled_loss_trains_a_tiny_model():
    text, topic = topic_catalog()
    sequences = topic_sequences(topic)
    train = TrainConfig(loss="sampled", negatives=16, batch_size=32, seed=0)
    model, report = train_model(sequences, text, replace(TINY, signals=()), train, epochs=4)
    assert report.epochs == 4
    scores = model.score([s[:-1] for s in sequences[:20]])
    same_topic = [(topic[scores[i].argmax().item()] == topic[sequences[i][0]]) for i in range(20)]
    assert np.mean(same_topic) > 0.7


# -- the model ------------------------------------------------------------------------------------


def test_candidate_scores_equal_the_catalog_scores_of_those_items():
    text, _ = topic_catalog()
    model = SequenceRecommender(TINY, text, torch.from_numpy(covisit_counts([(0, 1, 2), (2, 3)], len(text))))
    histories = [(0, 1), (5,)]
    catalog = model.score(histories)
    candidates = torch.as_tensor([[2, 3, 39], [0, 1, 2]])
    torch.testing.assert_close(model.score(histories, candidates=candidates), catalog.gather(1, candidates))
    ensemble = Ensemble([model, model])
    assert ensemble.score(histories).shape == (2, len(text))


def test_a_new_item_is_ranked_through_its_text_at_once():
    """Trained without it, the item enters the catalog by its text alone and ranks ahead of every
    item of the other topics for a user whose history is on its topic (through the learned item
    vectors: no text signals here), and far down for a user of another topic."""
    text, topic = topic_catalog()
    sequences = topic_sequences(topic)
    config = replace(TINY, signals=(), id_dropout=0.5)
    model, _ = train_model(sequences, text, config, TrainConfig(batch_size=32, seed=0), epochs=15)
    rng = np.random.default_rng(7)
    new_text = text[topic == 2].mean(dim=0, keepdim=True) + 0.3 * torch.as_tensor(rng.normal(size=(1, text.shape[1])),
                                                                                   dtype=torch.float32)
    model.add_items(new_text)
    new_item = model.n_items - 1
    assert torch.all(model.items.ids.weight[new_item] == 0)
    history = tuple(int(i) for i in np.flatnonzero(topic == 2)[:4])
    scores = model.score([history])[0].numpy()
    scores[list(history)] = -np.inf
    others = np.flatnonzero(topic != 2)
    assert scores[new_item] > scores[others].max(), "an item of another topic out-ranks the new one"
    rank = 1 + int(np.sum(scores > scores[new_item]))
    assert rank <= 1 + int(np.sum(topic == 2)) - len(history), f"the new item ranked {rank} of {model.n_items}"
    other = tuple(int(i) for i in np.flatnonzero(topic == 0)[:4])
    assert model.score([other])[0].argsort(descending=True).tolist().index(new_item) > 10


def dense_neighbour_kernel(text: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """The kernel written out as an N × N matrix: the reference the sparse one must equal."""
    cosine = text @ text.t()
    cosine.fill_diagonal_(-2.0)
    top, index = cosine.topk(k, dim=1)
    return torch.zeros_like(cosine).scatter_(1, index, torch.softmax(top / temperature, dim=1))


def unit_rows(n: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_the_sparse_neighbour_kernel_spreads_counts_as_the_dense_one_across_row_chunks(monkeypatch):
    monkeypatch.setattr("streamrec.model.sequence.NEIGHBOUR_CHUNK", 64)  # several chunks, a ragged last one
    text, k, temperature = unit_rows(300), 10, 0.05
    cosines, index = text_neighbours(text, k)
    assert index.shape == (300, k) and not (index == torch.arange(300)[:, None]).any(), "an item is its own neighbour"
    counts = torch.rand(7, 300) * (torch.rand(7, 300) < 0.05)  # sparse co-visitation rows, as served
    spread = (spread_kernel_t(cosines, index, temperature) @ counts.t()).t()
    torch.testing.assert_close(spread, counts @ dense_neighbour_kernel(text, k, temperature))


def test_grown_neighbour_lists_equal_lists_built_over_the_whole_catalog(monkeypatch):
    monkeypatch.setattr("streamrec.model.sequence.NEIGHBOUR_CHUNK", 50)
    text, k = unit_rows(230), 10
    old_cosines, old_index = text_neighbours(text[:170], k)
    grown_cosines, grown_index = grow_text_neighbours(text, 170, old_cosines, old_index)
    cosines, index = text_neighbours(text, k)
    assert torch.equal(grown_index, index), "an old item missed a new neighbour, or a new item an old one"
    torch.testing.assert_close(grown_cosines, cosines)


def test_a_model_grown_by_new_items_spreads_counts_over_their_text_neighbours_too():
    config = replace(TINY, signals=("covisit_next", "covisit_text"), neighbours=5)
    text = unit_rows(120, dim=8, seed=3)
    sequences = [tuple(int(i) for i in np.random.default_rng(u).choice(100, 5, replace=False)) for u in range(40)]
    model = SequenceRecommender(config, text[:100], torch.from_numpy(covisit_counts(sequences, 100))).eval()
    model.add_items(text[100:])
    recent = recent_items([sequences[0][:3]], config.recent)
    counts = model.covisit_signals(recent).clamp(min=0)
    combined = counts[:, 0] + config.covisit_backward * counts[:, 1] + counts[:, 2]
    expected = torch.log1p(combined @ dense_neighbour_kernel(text, 5, config.neighbour_temperature))
    torch.testing.assert_close(model.signals(recent)[:, 1], expected)
    assert (expected[:, 100:] > 0).any(), "no count reached a new item: the check would pass without the new rows"


def test_configs():
    assert (CPU_CONFIG.layers, CPU_CONFIG.heads, CPU_CONFIG.max_history) == (2, 2, 50)
    assert 64 <= CPU_CONFIG.hidden <= 128
    assert GPU_CONFIG.layers == 4 and 256 <= GPU_CONFIG.hidden <= 384
    assert not ID_ONLY_CONFIG.text and not ID_ONLY_CONFIG.signals
    assert SequenceConfig.from_dict(CPU_CONFIG.to_dict()) == CPU_CONFIG
    assert recent_items([(1, 2, 3), ()], 2).tolist() == [[3, 2], [PAD, PAD]]


def test_an_ensemble_saved_and_loaded_scores_the_same(tmp_path):
    text, topic = topic_catalog()
    sequences = topic_sequences(topic, users=16)
    members = [train_model(sequences, text, TINY, TrainConfig(batch_size=8, seed=seed), epochs=1)[0] for seed in (0, 1)]
    save_ensemble(Ensemble(members), tmp_path / "v1")
    loaded = load_ensemble(tmp_path / "v1")
    histories = [s[:3] for s in sequences[:4]]
    torch.testing.assert_close(loaded.score(histories), Ensemble(members).score(histories))


def test_a_deep_copy_scores_alike_and_shares_nothing():
    """The trainer's challenger starts as a deep copy of the champion, sparse kernel and all."""
    import copy

    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(50, 16), dim=1)
    model = SequenceRecommender(CPU_CONFIG, text, torch.rand(50, 50)).eval()
    clone = copy.deepcopy(model)
    histories = [[1, 2, 3], [4, 5]]
    with torch.no_grad():
        torch.testing.assert_close(clone.score(histories), model.score(histories))
    assert clone.neighbour_kernel_t.layout == torch.sparse_csr
    assert clone.neighbour_kernel_t.values().data_ptr() != model.neighbour_kernel_t.values().data_ptr()
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(model.parameters(), clone.parameters(), strict=True))
    clone.add_items(torch.nn.functional.normalize(torch.randn(3, 16), dim=1))
    assert (model.n_items, clone.n_items) == (50, 53)
