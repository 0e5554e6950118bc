"""Fitting the signal blender on logged data: a user's history → the item they chose next.

Each logged row is run through serving's :class:`~streamrec.ranking.recommender.Recommender` (offline
signals, see :mod:`trainer.offline.pipeline`); its candidates become feature rows (label 1 for the item
that came next) exactly as the recommender built them, the sequence model's retrieved items and
standardised scores included. Rows whose next item is not among the candidates carry no ranking
information and are skipped. The scorer must not have been trained on the rows' next items (the
quality benchmark fits on the held-back split with the model trained without it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from streamrec.ranking.blender import Blender, FEATURES, fit
from trainer.offline.pipeline import (
    InProcessSequenceScorer,
    OfflinePipeline,
    OfflineSignals,
    amazon_records,
    profile_from_history,
)
from streamrec.datasets.sequences import Example
from streamrec.settings import RecsSettings, StreamsSettings

Say = Callable[[str], None]


async def ranked_rows(pipeline: OfflinePipeline, history: Sequence[str], signals: OfflineSignals) -> tuple[list[str], np.ndarray]:
    """One list as the Recommender built it: its candidates' ids and their feature rows."""
    recommender = pipeline.recommender(signals=signals)
    profile = profile_from_history(history, pipeline.index, pipeline.streams)
    outcome = await recommender.recommend("offline", k=pipeline.recs.k, exclude=list(history), profile=profile,
                                          profile_known=True)
    assert outcome.rows is not None and outcome.candidate_ids is not None
    return outcome.candidate_ids, outcome.rows


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
        label = np.array([item_id == target for item_id in candidates], np.float32)
        if label.any():
            blocks.append(rows)
            labels.append(label)
            lists += 1
    if not blocks:
        return LoggedRows(np.zeros((0, len(FEATURES)), np.float32), np.zeros(0, np.float32), 0, len(examples))
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
    """Fit the blender in ``rounds`` (the candidates kept by ``diversity_pool`` depend on the weights)."""
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
    data_dir: Path, scorer_folder: Path, *, rows: int = 3000, seed: int = 0, rounds: int = 2,
    recs: RecsSettings | None = None, streams: StreamsSettings | None = None, start: Blender | None = None,
    cache_dir: Path | None = None, say: Say = print,
) -> Blender:
    """Fit on a random sample of ``Scientific.valid.inter`` rows with the sequence version in
    ``scorer_folder``, which must have been trained without those rows' next items (e.g. by
    ``streamrec trainer train-sequence --hold-back-last``). Item embeddings: MiniLM, as served."""
    from streamrec.datasets.amazon_pairs import FOLDER, VALID_FILE, load_catalog, load_examples
    from streamrec.model.served_sequence import load_version
    from streamrec.ranking.item_index import ItemIndex
    from trainer.offline.sequence_train import text_vectors

    recs, streams = recs or RecsSettings(), streams or StreamsSettings()
    catalog = load_catalog(data_dir)
    vectors = text_vectors(catalog.texts, cache_dir).numpy()
    records = amazon_records(data_dir, vectors)
    item_ids = list(catalog.item_ids)
    evaluation = load_examples(data_dir / FOLDER / VALID_FILE)
    sequences = user_sequences(evaluation, item_ids)
    pipeline = OfflinePipeline(
        ItemIndex.from_records(records), OfflineSignals.from_sequences(sequences.values(), streams),
        InProcessSequenceScorer(load_version(scorer_folder)), start or Blender.load(), recs, streams,
    )
    picked = np.sort(np.random.default_rng(seed).choice(len(evaluation), size=min(rows, len(evaluation)), replace=False))
    examples = [evaluation[i] for i in picked]
    say(f"fitting on {len(examples):,} of {len(evaluation):,} rows of {VALID_FILE} (seed {seed}), scorer {scorer_folder}")
    return fit_on_examples(pipeline, examples, item_ids, sequences=sequences, rounds=rounds, say=say, fitted_on={
        "dataset": f"amazon_scientific {VALID_FILE}", "sample_seed": seed,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "scorer": f"bert_scorer {scorer_folder}",
        "item_embeddings": "all-MiniLM-L6-v2 (pretrained, as item_encoder version 1)",
        "label": "the next item among the candidates (rows without it skipped); the user's later events hidden from the signals",
    })
