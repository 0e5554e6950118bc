"""The training recipe's parts without Triton: tokenisation, metrics, baselines, negatives,
fine-tuning and distillation on tiny models, and the Amazon data preparation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from streamrec.datasets.sequences import Example, train_sequences
from trainer.offline.baselines import CoVisitation, Popularity
from trainer.offline.distill import DistillConfig, distill_scorer, teacher_targets
from trainer.offline.evaluation import rerank, summarise, target_rank, tiebreak_order
from trainer.offline.finetune import (
    ContextWriter,
    FinetuneConfig,
    NegativeSampler,
    TrainingTexts,
    finetune_encoder,
    finetune_scorer,
    scorer_groups,
)
from streamrec.model.inference import (
    CachedTokenizer,
    InProcessScorer,
    tokenize_pairs,
    tokenize_texts,
)
from streamrec.model.networks import (
    CrossEncoderScorer,
    StudentShape,
    TextEncoder,
    init_student,
    load_backbone,
    pretrained_minilm_path,
    tiny_bert_config,
)

EDGE = ["", "a", "🧪🔬 lab kit ✨", "ピペット 10 mL 科学", "Нитриловые перчатки", "word " * 400, "x" * 3000, " \t\n "]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(pretrained_minilm_path()), local_files_only=True)


@pytest.fixture(scope="module")
def toy():
    """Ten items in two families; users buy within a family, in order."""
    titles = [f"{'glove' if i < 5 else 'pipette'} model {i}" for i in range(10)]
    texts = [f"{t}. Industrial & Scientific > {'Safety' if i < 5 else 'Lab'}. Brand{i % 3}" for i, t in enumerate(titles)]
    examples = []
    for user in range(40):
        start = 0 if user % 2 else 5
        sequence = [start + (user + k) % 5 for k in range(4)]
        for cut in range(1, 4):
            examples.append(Example(f"u{user}", tuple(sequence[:cut]), sequence[cut]))
    sequences = train_sequences(examples)
    data = TrainingTexts(texts, titles, CoVisitation(sequences, 10), Popularity(sequences, 10))
    return data, examples


@pytest.mark.parametrize("max_length", [8, 16, 33, 128, 300])
def test_cached_tokeniser_equals_hugging_face(tokenizer, max_length):
    tokens = CachedTokenizer(tokenizer, max_length)
    contexts = [a for a in EDGE for _ in EDGE]
    items = EDGE * len(EDGE)
    ours, theirs = tokens.pairs(contexts, items), tokenize_pairs(tokenizer, contexts, items, max_length)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(ours[key], theirs[key]), key
    ours, theirs = tokens.texts(EDGE), tokenize_texts(tokenizer, EDGE, max_length)
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(ours[key], theirs[key]), key


def test_cache_is_bounded(tokenizer):
    tokens = CachedTokenizer(tokenizer, 32, cache_size=3)
    tokens.ids([f"text {i}" for i in range(10)])
    assert len(tokens._cache) == 3
    assert tokens.ids(["text 9"]) == [tokenizer("text 9", add_special_tokens=False)["input_ids"]]


def test_ranks_ties_and_exclusions():
    tiebreak = np.arange(5)
    scores = np.array([0.1, 0.9, 0.5, 0.5, 0.2])
    assert target_rank(scores, 1, [], tiebreak) == 1
    assert target_rank(scores, 2, [], tiebreak) == 2 and target_rank(scores, 3, [], tiebreak) == 3  # tie: fixed order
    assert target_rank(scores, 2, [1], tiebreak) == 1  # an excluded item is not ahead
    assert target_rank(scores, 1, [1], tiebreak) == float("inf")
    metrics = summarise([1, 2, 11, float("inf")])
    assert metrics["hr10"] == 0.5
    assert metrics["ndcg10"] == pytest.approx((1 + 1 / np.log2(3)) / 4)
    assert metrics["mrr20"] == pytest.approx((1 + 0.5 + 1 / 11) / 4)
    assert len(tiebreak_order(7)) == 7


def test_rerank_puts_the_candidates_first_in_second_stage_order():
    first = np.array([5.0, 4.0, 3.0, 2.0, -np.inf])
    out = rerank(first, np.array([1, 2]), np.array([0.1, 0.7]))
    assert list(np.argsort(-out)[:4]) == [2, 1, 0, 3] and out[4] == -np.inf


def test_covisitation_and_popularity():
    sequences = [(0, 1, 2), (0, 1), (3, 4)]
    covisit = CoVisitation(sequences, 5, window=1, backward=0.5)
    assert covisit.weights[0, 1] == 2 and covisit.weights[1, 0] == 1 and covisit.weights[0, 2] == 0
    assert list(covisit.neighbours(0, 3)) == [1]
    assert np.argmax(covisit.scores([0])) == 1
    popularity = Popularity(sequences, 5)
    assert list(popularity.top(2)) == [0, 1]


def test_negatives_never_include_the_positive_or_the_history(toy):
    data, examples = toy
    config = FinetuneConfig(covisit_negatives=2, popular_negatives=2, inbatch_negatives=3)
    sampler = NegativeSampler(data.covisit, data.popularity, config)
    rng = np.random.default_rng(0)
    for example in examples[:20]:
        hard = sampler.hard(example, rng)
        assert hard and example.target not in hard and not set(hard) & set(example.history)
    for example, group in zip(examples[:8], scorer_groups(examples[:8], sampler, config, rng)):
        assert group[0] == example.target and len(group) == len(set(group))
        assert not set(group[1:]) & {example.target, *example.history}


def test_context_is_newest_first_within_budget(tokenizer, toy):
    data, _ = toy
    writer = ContextWriter(data.titles, tokenizer, budget=8)
    assert writer((1, 2, 3)) == "glove model 3 ; glove model 2"  # 4 tokens each: the budget holds two
    assert writer((), query="nitrile").startswith("search: nitrile")


def tiny(kind: str, tokenizer):
    backbone = load_backbone(config=tiny_bert_config(tokenizer.vocab_size))
    return TextEncoder(backbone) if kind == "encoder" else CrossEncoderScorer(backbone)


def test_fine_tuning_learns_the_toy_data_and_keeps_the_best_weights(tokenizer, toy):
    data, examples = toy
    scorer = tiny("scorer", tokenizer)
    config = FinetuneConfig(lr=3e-3, batch_size=8, epochs=3, max_steps=40, eval_every=10, patience=10, max_length=32,
                            context_budget=12, precision="fp32")
    contexts = ContextWriter(data.titles, tokenizer, 12)
    scorer_in_process = InProcessScorer(scorer, tokenizer, max_length=32)

    def accuracy() -> float:
        """Share of examples whose next item outscores an item of the other family."""
        wins = []
        for e in examples[:30]:
            other = (e.target + 5) % 10
            s = scorer_in_process.score_pairs([contexts(e.history)] * 2, [data.item_texts[e.target], data.item_texts[other]])
            wins.append(s[0] > s[1])
        return float(np.mean(wins))

    report = finetune_scorer(scorer, tokenizer, examples, data, config, validate=accuracy, say=lambda _: None)
    assert report.steps == 40 and report.best_metric >= 0.9, report.history
    assert accuracy() == report.best_metric  # the best validated weights are the ones kept


def test_encoder_fine_tuning_and_early_stopping(tokenizer, toy):
    data, examples = toy
    encoder = tiny("encoder", tokenizer)
    config = FinetuneConfig(lr=1e-3, batch_size=8, max_steps=100, eval_every=2, patience=2, max_length=32,
                            covisit_negatives=1, popular_negatives=1, precision="fp32")
    report = finetune_encoder(encoder, tokenizer, examples, data, config, validate=lambda: 0.0, say=lambda _: None)
    assert report.stopped == "early stopping" and report.steps == 4 and report.best_step == 0


def test_student_starts_from_the_teachers_projected_embeddings_and_learns_its_scores(tokenizer, toy):
    data, examples = toy
    teacher = tiny("scorer", tokenizer).eval()
    shape = StudentShape(layers=1, hidden=16, heads=2, intermediate=32)
    student = init_student(teacher, shape)
    assert student.backbone.config.hidden_size == 16 and student.backbone.config.vocab_size == tokenizer.vocab_size
    words = teacher.backbone.embeddings.word_embeddings.weight
    projected = student.backbone.embeddings.word_embeddings.weight
    # nearest neighbours survive the projection better than chance
    query = words[1000]
    assert torch.nn.functional.cosine_similarity(projected[1000], projected[1001], dim=0).abs() < 1.0
    assert query.shape[0] == 32 and projected.shape[1] == 16
    config = DistillConfig(queries=40, batch_size=8, epochs=30, eval_every=1000, max_length=32, context_budget=12, lr=3e-3)
    targets = teacher_targets(teacher, tokenizer, examples, data, config, FinetuneConfig(batch_size=8), say=lambda _: None)
    assert len(targets.groups) == 40 and all(len(g) == len(l) for g, l in zip(targets.groups, targets.logits))
    tokens = CachedTokenizer(tokenizer, 32)

    def mse() -> float:
        pairs = tokens.pairs([c for c, g in zip(targets.contexts, targets.groups) for _ in g],
                             [data.item_texts[i] for g in targets.groups for i in g])
        with torch.inference_mode():
            out = student(**pairs).numpy()
        return float(np.mean((out - np.concatenate(targets.logits)) ** 2))

    before = mse()
    distill_scorer(student, tokenizer, targets, data, config, say=lambda _: None)
    assert mse() < before / 2


def test_amazon_corpus(data_dir):
    from trainer.offline.recipe import load_corpus

    corpus = load_corpus(data_dir)
    assert len(corpus.item_texts) == 1585 and len(corpus.valid) == 2928 and len(corpus.train) == 10928
    assert all(text for text in corpus.item_texts)
    assert "Industrial & Scientific" in corpus.item_texts[0]
    assert max(max(e.history, default=0) for e in corpus.train) < 1585
