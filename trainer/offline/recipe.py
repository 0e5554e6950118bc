"""The whole training recipe in one call, and the retrieval/re-ranking it is judged by.

``train_models`` fine-tunes the item encoder, then the cross-encoder scorer (the teacher),
then distils the student from it, early-stopping each on validation examples, and publishes
each as a self-contained version folder into a model repository (a scratch one, or Triton's).
``streamrec trainer train-scorer`` and ``benchmarks/quality.py`` both call it; the incremental
trainer reuses the same pieces.

Re-ranking as served: the encoder retrieves the top ``k`` items for the user context (items the
user has are excluded), the scorer orders those ``k``, every other item stays behind them.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from streamrec.datasets.amazon_pairs import FOLDER, TRAIN_FILE, VALID_FILE, load_catalog, load_examples
from streamrec.datasets.sequences import Example, train_sequences
from streamrec.model import contract
from streamrec.model.artifacts import (
    VersionMetadata,
    load_folder,
    publish,
    read_metadata,
    versions,
)
from trainer.offline.baselines import CoVisitation, Popularity
from trainer.offline.distill import DistillConfig, distill_scorer, teacher_targets
from trainer.offline.evaluation import rerank, summarise, target_rank, tiebreak_order
from trainer.offline.finetune import (
    ContextWriter,
    FinetuneConfig,
    Say,
    TrainingTexts,
    example_key,
    finetune_encoder,
    finetune_scorer,
)
from streamrec.model.inference import CachedTokenizer, Precision, Runner
from streamrec.model.networks import (
    CrossEncoderScorer,
    StudentShape,
    TextEncoder,
    init_student,
    load_backbone,
    pretrained_minilm_path,
)


def embed(
    encoder: TextEncoder, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_length: int,
    precision: Precision = "fp32", batch: int = 128,
) -> np.ndarray:
    runner = Runner(encoder, device=next(encoder.parameters()).device, precision=precision)
    tokens = CachedTokenizer(tokenizer, max_length)
    rows = [runner(tokens.texts(list(texts[s : s + batch]))) for s in range(0, len(texts), batch)]
    return np.concatenate(rows) if rows else np.zeros((0, encoder.dim), np.float32)


def score_lists(
    scorer: CrossEncoderScorer, tokenizer: PreTrainedTokenizerBase, contexts: Sequence[str],
    candidate_texts: Sequence[Sequence[str]], *, max_length: int, precision: Precision = "fp32", batch: int = 200,
) -> list[np.ndarray]:
    """Scores of each context's candidates (pairs are batched across contexts)."""
    runner = Runner(scorer, device=next(scorer.parameters()).device, precision=precision)
    tokens = CachedTokenizer(tokenizer, max_length)
    pair_contexts = [c for c, items in zip(contexts, candidate_texts) for _ in items]
    pair_items = [text for items in candidate_texts for text in items]
    flat = [runner(tokens.pairs(pair_contexts[s : s + batch], pair_items[s : s + batch])) for s in range(0, len(pair_items), batch)]
    scores = np.concatenate(flat) if flat else np.zeros(0, np.float32)
    out, start = [], 0
    for items in candidate_texts:
        out.append(scores[start : start + len(items)])
        start += len(items)
    return out


def retrieval_scores(user_vectors: np.ndarray, item_vectors: np.ndarray, histories: Sequence[Sequence[int]]) -> np.ndarray:
    """Cosine scores, users x items, with each user's own items at -inf."""
    scores = user_vectors.astype(np.float64) @ item_vectors.astype(np.float64).T
    for row, history in enumerate(histories):
        if len(history):
            scores[row, list(history)] = -np.inf
    return scores


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best items per row, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


@dataclass
class Corpus:
    """A dataset as the recipe needs it: item texts/titles by index, train and validation examples."""

    item_texts: Sequence[str]
    titles: Sequence[str]
    train: Sequence[Example]
    valid: Sequence[Example]

    def training_texts(self) -> TrainingTexts:
        sequences = train_sequences(self.train)
        n = len(self.item_texts)
        return TrainingTexts(self.item_texts, self.titles, CoVisitation(sequences, n), Popularity(sequences, n))


def load_corpus(data_dir: Path, *, valid_file: Path | None = None):
    """Catalog, training examples and the examples to select (or evaluate) on, for the recipe."""
    folder = data_dir / FOLDER
    catalog = load_catalog(data_dir)
    return Corpus(
        item_texts=catalog.texts,
        titles=catalog.titles,
        train=load_examples(folder / TRAIN_FILE),
        valid=load_examples(valid_file or folder / VALID_FILE),
    )


@dataclass
class Plan:
    encoder: FinetuneConfig = field(
        default_factory=lambda: FinetuneConfig(
            lr=5e-5, batch_size=32, epochs=2.0, max_length=48, covisit_negatives=1, popular_negatives=1,
            eval_every=50, patience=4,
        )
    )
    """The encoder's lr is 5e-5, not 2e-5: on a 2-core CPU it gets about 150 steps (2e-5 moved
    nothing measurable in 88 steps); item texts are cut at 48 tokens (title and the start of the
    category path)."""
    scorer: FinetuneConfig = field(
        default_factory=lambda: FinetuneConfig(
            batch_size=8, epochs=2.0, inbatch_negatives=2, covisit_negatives=1, popular_negatives=1,
            retrieved_negatives=3, eval_every=100, patience=3,
        )
    )
    """Groups of 8: the positive, 2 in-batch, 1 co-visited, 1 popular and 3 of the fine-tuned
    encoder's top 30 (without those, validation NDCG of re-ranking fell while the training loss
    kept falling: the scorer learned to reject easy negatives, not to order look-alikes)."""
    scorer_init: Literal["pretrained", "encoder"] = "encoder"
    """Backbone the scorer starts from: all-MiniLM-L6-v2 itself, or the fine-tuned encoder's copy
    of it (domain-adapted; with the cosine head a fresh scorer then ranks like the encoder)."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    student: StudentShape = field(default_factory=StudentShape)
    validation_users: int = 300
    """Validation examples (a fixed random sample) used for early stopping."""
    validation_candidates: int = 20
    """Scorer validation re-ranks the fine-tuned encoder's top this many."""
    seed: int = 0


class Validator:
    """NDCG@10 on a fixed sample of validation examples, for early stopping."""

    def __init__(self, corpus: Corpus, tokenizer: PreTrainedTokenizerBase, plan: Plan) -> None:
        rng = np.random.default_rng(plan.seed + 1)
        size = min(plan.validation_users, len(corpus.valid))
        self.examples = [corpus.valid[i] for i in sorted(rng.choice(len(corpus.valid), size=size, replace=False))]
        self.corpus = corpus
        self.tokenizer = tokenizer
        self.plan = plan
        self.tiebreak = tiebreak_order(len(corpus.item_texts))
        self.candidates: np.ndarray | None = None
        self.first_stage: np.ndarray | None = None

    def encoder_metric(self, encoder: TextEncoder, config: FinetuneConfig) -> float:
        contexts = ContextWriter(self.corpus.titles, self.tokenizer, config.context_budget)
        items = embed(encoder, self.tokenizer, self.corpus.item_texts, max_length=config.max_length, precision="auto")
        users = embed(encoder, self.tokenizer, [contexts(e.history) for e in self.examples], max_length=config.max_length, precision="auto")
        scores = retrieval_scores(users, items, [e.history for e in self.examples])
        return self._ndcg(scores)

    def fix_first_stage(self, encoder: TextEncoder, config: FinetuneConfig) -> None:
        """Remember the encoder's ranking; the scorer and student are validated re-ranking its top."""
        contexts = ContextWriter(self.corpus.titles, self.tokenizer, config.context_budget)
        items = embed(encoder, self.tokenizer, self.corpus.item_texts, max_length=config.max_length)
        users = embed(encoder, self.tokenizer, [contexts(e.history) for e in self.examples], max_length=config.max_length)
        self.first_stage = retrieval_scores(users, items, [e.history for e in self.examples])
        self.candidates = top_k(self.first_stage, self.plan.validation_candidates)

    def scorer_metric(self, scorer: CrossEncoderScorer, config: FinetuneConfig | DistillConfig, precision: Precision) -> float:
        assert self.first_stage is not None and self.candidates is not None
        contexts = ContextWriter(self.corpus.titles, self.tokenizer, config.context_budget)
        lists = score_lists(
            scorer, self.tokenizer, [contexts(e.history) for e in self.examples],
            [[self.corpus.item_texts[i] for i in row] for row in self.candidates],
            max_length=config.max_length, precision=precision,
        )
        scores = np.stack([rerank(fs, c, s) for fs, c, s in zip(self.first_stage, self.candidates, lists)])
        return self._ndcg(scores)

    def _ndcg(self, scores: np.ndarray) -> float:
        ranks = [target_rank(row, e.target, e.history, self.tiebreak) for row, e in zip(scores, self.examples)]
        return summarise(ranks)["ndcg10"]


@dataclass
class TrainedModels:
    encoder: Path
    scorer: Path
    student: Path
    reports: dict[str, dict] = field(default_factory=dict)


STAGES = ("encoder", "scorer", "student")


def _latest(repo: Path, model: str) -> Path:
    found = versions(repo / model)
    if not found:
        raise FileNotFoundError(f"{repo / model} has no version to start from; train that stage too")
    return repo / model / str(found[-1])


def train_models(
    corpus: Corpus, repo: Path, plan: Plan | None = None, *, say: Say = print, lineage: dict | None = None,
    stages: Sequence[str] = STAGES,
) -> TrainedModels:
    """Fine-tune encoder and teacher, distil the student; publish each into ``repo`` (new versions).

    ``stages`` picks what to train; a stage left out uses the newest version already in ``repo``.
    """
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; choose from {STAGES}")
    plan = plan or Plan()
    tokenizer = AutoTokenizer.from_pretrained(str(pretrained_minilm_path()), local_files_only=True)
    data = corpus.training_texts()
    validator = Validator(corpus, tokenizer, plan)
    reports: dict[str, dict] = {}
    lineage = {**(lineage or {}), "train_examples": len(corpus.train), "validation_examples": len(validator.examples)}

    started = time.monotonic()
    if "encoder" in stages:
        encoder = TextEncoder(load_backbone())
        report = finetune_encoder(
            encoder, tokenizer, corpus.train, data, plan.encoder,
            validate=lambda: validator.encoder_metric(encoder, plan.encoder), say=say,
        )
        reports["encoder"] = {"config": plan.encoder.to_dict(), **report.to_dict()}
        encoder_folder = publish(
            repo, contract.ITEM_ENCODER, encoder, tokenizer,
            VersionMetadata(kind="encoder", base="all-MiniLM-L6-v2 fine-tuned", max_length=plan.encoder.max_length,
                            metrics={"val_ndcg10_sample": report.best_metric}, lineage={**lineage, "recipe": "finetune_encoder"}),
        )
        say(f"encoder: published {encoder_folder} ({time.monotonic() - started:.0f} s)")
    else:
        encoder_folder = _latest(repo, contract.ITEM_ENCODER)
        encoder = load_folder(encoder_folder)[0]  # type: ignore[assignment]
    encoder_length = read_metadata(encoder_folder).max_length

    item_vectors = embed(encoder, tokenizer, corpus.item_texts, max_length=encoder_length, precision="auto")
    writer = ContextWriter(corpus.titles, tokenizer, plan.encoder.context_budget)

    def retrieve(examples: Sequence[Example], k: int) -> list[list[int]]:
        users = embed(encoder, tokenizer, [writer(e.history) for e in examples], max_length=encoder_length, precision="auto")
        return [list(map(int, row)) for row in top_k(retrieval_scores(users, item_vectors, [e.history for e in examples]), k)]

    if "scorer" in stages:
        validator.fix_first_stage(encoder, replace(plan.encoder, max_length=encoder_length))
        retrieved = None
        if plan.scorer.retrieved_negatives:
            retrieved = dict(zip(map(example_key, corpus.train), retrieve(corpus.train, plan.scorer.retrieved_pool)))
            say(f"scorer: first-stage candidates for {len(retrieved):,} training examples ({time.monotonic() - started:.0f} s)")
        backbone = copy.deepcopy(encoder.backbone) if plan.scorer_init == "encoder" else load_backbone()
        teacher = CrossEncoderScorer(backbone)
        report = finetune_scorer(
            teacher, tokenizer, corpus.train, data, plan.scorer, retrieved=retrieved,
            validate=lambda: validator.scorer_metric(teacher, plan.scorer, "bf16"), say=say,
        )
        reports["scorer"] = {"config": plan.scorer.to_dict(), **report.to_dict()}
        scorer_folder = publish(
            repo, contract.CROSS_ENCODER, teacher, tokenizer,
            VersionMetadata(kind="scorer", base=f"all-MiniLM-L6-v2 ({plan.scorer_init}) fine-tuned", max_length=plan.scorer.max_length,
                            metrics={"val_ndcg10_sample": report.best_metric}, lineage={**lineage, "recipe": "finetune_scorer"}),
        )
        say(f"scorer: published {scorer_folder} ({time.monotonic() - started:.0f} s)")
    else:
        scorer_folder = _latest(repo, contract.CROSS_ENCODER)
        teacher = load_folder(scorer_folder)[0]  # type: ignore[assignment]
    if "student" not in stages:
        return TrainedModels(encoder_folder, scorer_folder, _latest(repo, contract.CROSS_ENCODER_STUDENT), reports)
    if validator.first_stage is None:
        validator.fix_first_stage(encoder, replace(plan.encoder, max_length=encoder_length))

    targets = teacher_targets(
        teacher, tokenizer, corpus.train, data, plan.distill, replace(plan.scorer, retrieved_negatives=0),
        retrieve=lambda examples: retrieve(examples, plan.distill.retrieved), say=say,
    )
    student = init_student(teacher, plan.student, seed=plan.seed)
    report = distill_scorer(
        student, tokenizer, targets, data, plan.distill,
        validate=lambda: validator.scorer_metric(student, plan.distill, "fp32"), say=say,
    )
    reports["student"] = {"config": plan.distill.to_dict(), "shape": plan.student.to_dict(), **report.to_dict()}
    student_folder = publish(
        repo, contract.CROSS_ENCODER_STUDENT, student, tokenizer,
        VersionMetadata(kind="scorer", base=f"distilled from {contract.CROSS_ENCODER} {scorer_folder.name}",
                        max_length=plan.distill.max_length, metrics={"val_ndcg10_sample": report.best_metric},
                        lineage={**lineage, "recipe": "distill_scorer", "teacher": str(scorer_folder), **plan.student.to_dict()}),
    )
    say(f"student: published {student_folder} ({time.monotonic() - started:.0f} s)")
    return TrainedModels(encoder_folder, scorer_folder, student_folder, reports)
