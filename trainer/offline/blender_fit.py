"""Fitting the signal blender on logged data: a user's history → the item they chose next.

Each logged row is run through serving's :class:`~streamrec.ranking.recommender.Recommender` (offline
signals, see :mod:`trainer.offline.pipeline`); its candidates become feature rows (label 1 for the item
that came next) with the scorer column exactly as the recommender filled it: the scorer's
standardised logits on the ``rerank_top`` candidates the current weights rank best, 0 elsewhere.
Rows whose next item is not among the candidates carry no ranking information and are skipped.

Which candidates the scorer sees depends on the weights, so the fit runs in ``rounds``: the
first round selects with the starting weights, each later one with the previous fit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from streamrec.ranking.blender import Blender, features, fit, standardise
from streamrec.ranking.candidates import Candidate, CandidateGenerator, CandidateSet
from streamrec.ranking.item_index import ItemIndex
from trainer.offline.pipeline import (
    NamedScorer,
    OfflinePipeline,
    OfflineSignals,
    amazon_records,
    profile_from_history,
)
from streamrec.ranking.recommender import Scorer
from streamrec.datasets.sequences import Example
from streamrec.settings import RecsSettings, StreamsSettings

Say = Callable[[str], None]


class _RecordingGenerator:
    """Passes through to a generator and keeps the last candidate set it produced."""

    def __init__(self, inner: CandidateGenerator) -> None:
        self.inner = inner
        self.found: CandidateSet | None = None

    async def generate(self, *args, **kwargs) -> CandidateSet:
        self.found = await self.inner.generate(*args, **kwargs)
        return self.found


class _RecordingScorer:
    """Passes through to a scorer and keeps the last items and logits."""

    def __init__(self, inner: Scorer) -> None:
        self.inner = inner
        self.model = inner.model
        self.items: list[str] = []
        self.logits = np.zeros(0, np.float32)

    async def score(self, context: str, items: list[str]) -> np.ndarray:
        self.items, self.logits = [], np.zeros(0, np.float32)
        logits = np.asarray(await self.inner.score(context, items), np.float32)
        self.items, self.logits = list(items), logits
        return logits


async def ranked_rows(pipeline: OfflinePipeline, history: Sequence[str], signals: OfflineSignals) -> tuple[list[Candidate], np.ndarray]:
    """One list as the Recommender built it: its candidates and their feature rows, scorer column included.

    The recommender is run as is; the candidate set and the scorer's answer are recorded on the
    way, and the re-ranked head is checked against the texts the scorer was actually sent.
    """
    generator = _RecordingGenerator(CandidateGenerator(pipeline.index, signals, pipeline.recs))
    scorer = _RecordingScorer(pipeline.scorer) if pipeline.scorer is not None else None
    recommender = pipeline.recommender(scorer=scorer, generator=generator)  # type: ignore[arg-type]
    profile = profile_from_history(history, pipeline.index, pipeline.streams)
    await recommender.recommend("offline", k=pipeline.recs.k, exclude=list(history), profile=profile, profile_known=True)
    assert generator.found is not None
    candidates = list(generator.found.candidates.values())
    rows = features(candidates)
    if scorer is not None and len(scorer.logits):
        order = np.argsort(-pipeline.blender.score(rows), kind="stable")
        top = order[: len(scorer.logits)]
        sent = [recommender._text(candidates[i]) for i in top]
        if sent != scorer.items:
            raise RuntimeError("the re-ranked head differs from what the recommender sent to the scorer")
        rows[top, 0] = standardise(scorer.logits)
    return candidates, rows


@dataclass
class LoggedRows:
    rows: np.ndarray  # features, all lists stacked
    labels: np.ndarray  # 1 for the item that came next
    lists: int  # logged rows whose next item was a candidate
    seen: int  # logged rows looked at


async def logged_rows(
    pipeline: OfflinePipeline, examples: Sequence[Example], item_ids: Sequence[str],
    sequences: dict[str, Sequence[str]],
) -> LoggedRows:
    """Feature rows of the logged examples, each with its user's later events hidden from the signals."""
    assert isinstance(pipeline.signals, OfflineSignals)
    blocks, labels, lists = [], [], 0
    for example in examples:
        history = [item_ids[i] for i in example.history]
        target = item_ids[example.target]
        signals = pipeline.signals.before(sequences[example.user], len(history), pipeline.streams)
        candidates, rows = await ranked_rows(pipeline, history, signals)
        label = np.array([c.item_id == target for c in candidates], np.float32)
        if label.any():
            blocks.append(rows)
            labels.append(label)
            lists += 1
    if not blocks:
        return LoggedRows(np.zeros((0, 6), np.float32), np.zeros(0, np.float32), 0, len(examples))
    return LoggedRows(np.vstack(blocks), np.concatenate(labels), lists, len(examples))


def user_sequences(examples: Sequence[Example], item_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each user's longest sequence (history + next item) as item ids."""
    out: dict[str, list[str]] = {}
    for example in examples:
        sequence = [item_ids[i] for i in (*example.history, example.target)]
        if len(sequence) > len(out.get(example.user, [])):
            out[example.user] = sequence
    return out


def fit_on_examples(
    pipeline: OfflinePipeline, examples: Sequence[Example], item_ids: Sequence[str], *,
    sequences: dict[str, Sequence[str]], rounds: int = 2, say: Say = print, fitted_on: dict[str, object] | None = None,
) -> Blender:
    """Fit the blender in ``rounds`` (each re-selecting the scorer's head with the last weights)."""
    blender = pipeline.blender
    for round_ in range(1, rounds + 1):
        pipeline.blender = blender
        data = asyncio.run(logged_rows(pipeline, examples, item_ids, sequences))
        if not data.lists:
            raise ValueError("no logged row has its next item among the candidates: nothing to fit")
        blender = fit(data.rows, data.labels, fitted_on={
            **(fitted_on or {}), "rows": data.seen, "rows_with_target_in_candidates": data.lists,
            "candidate_rows": len(data.labels), "rounds": round_,
        })
        say(f"round {round_}: {data.lists} of {data.seen} rows have the next item among the candidates; "
            f"weights {blender.weights}, bias {blender.bias}")
    pipeline.blender = blender
    return blender


def fit_blender(
    data_dir: Path, models: Path, *, rows: int = 3000, seed: int = 0, rounds: int = 2,
    recs: RecsSettings | None = None, streams: StreamsSettings | None = None, start: Blender | None = None,
    precision: str = "bf16", say: Say = print,
) -> Blender:
    """Fit on a random sample of ``Scientific.train.inter`` rows with the newest models in ``models``.

    The item index holds the fine-tuned encoder's item embeddings; the scorer is the student
    (what serves on CPU). ``start`` (default: the packaged weights) picks the first round's head.
    """
    from streamrec.datasets.amazon_pairs import TRAIN_FILE
    from trainer.offline.recipe import load_corpus
    from streamrec.model import contract
    from streamrec.model.artifacts import load_folder, versions
    from streamrec.model.inference import InProcessScorer
    from trainer.offline.recipe import embed

    recs, streams = recs or RecsSettings(), streams or StreamsSettings()
    corpus = load_corpus(data_dir)
    folders = {}
    for model in (contract.ITEM_ENCODER, contract.CROSS_ENCODER_STUDENT):
        found = versions(models / model)
        if not found:
            raise FileNotFoundError(f"no complete version of {model} in {models}")
        folders[model] = models / model / str(found[-1])
    encoder, tokenizer, encoder_meta = load_folder(folders[contract.ITEM_ENCODER])
    student, student_tokenizer, student_meta = load_folder(folders[contract.CROSS_ENCODER_STUDENT])
    say(f"embedding {len(corpus.item_texts):,} items with {folders[contract.ITEM_ENCODER]}")
    records = amazon_records(data_dir, embed(encoder, tokenizer, corpus.item_texts, max_length=encoder_meta.max_length))
    item_ids = [record.item_id for record in records]
    sequences = user_sequences(corpus.train, item_ids)
    pipeline = OfflinePipeline(
        ItemIndex.from_records(records), OfflineSignals.from_sequences(sequences.values(), streams),
        NamedScorer(InProcessScorer(student, student_tokenizer, max_length=student_meta.max_length,
                                    precision=precision), contract.CROSS_ENCODER_STUDENT),  # type: ignore[arg-type]
        start or Blender.load(), recs, streams,
    )
    picked = np.sort(np.random.default_rng(seed).choice(len(corpus.train), size=min(rows, len(corpus.train)), replace=False))
    examples = [corpus.train[i] for i in picked]
    say(f"fitting on {len(examples):,} of {len(corpus.train):,} rows of {TRAIN_FILE} (seed {seed}), scorer {folders[contract.CROSS_ENCODER_STUDENT]}")
    return fit_on_examples(pipeline, examples, item_ids, sequences=sequences, rounds=rounds, say=say, fitted_on={
        "dataset": f"amazon_scientific {TRAIN_FILE}", "sample_seed": seed,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "scorer": f"{contract.CROSS_ENCODER_STUDENT} {folders[contract.CROSS_ENCODER_STUDENT]} ({precision})",
        "item_embeddings": f"{contract.ITEM_ENCODER} {folders[contract.ITEM_ENCODER]}",
        "rerank_top": recs.rerank_top,
        "label": "the next item among the candidates (rows without it skipped); the user's later events hidden from the signals",
    })

