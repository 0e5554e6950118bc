"""The served pipeline under the evaluation protocol: blender fitted on held-back data, then scored.

1. **Blender fit** on the protocol's selection split: the sequence model trained without each
   fit sequence's last item (``held_model``) serves the recommender, and the held-back last
   items are the labels (:func:`trainer.offline.blender_fit.fit_on_examples`), each row's own
   later events hidden from the signals. The evaluation file's targets play no part.
2. **Evaluation**: for each seed's model trained on the full fit sequences, serving's
   :class:`~streamrec.ranking.recommender.Recommender` (offline signals counted from the fit
   sequences, the item index of MiniLM embeddings) builds every row's list of ``k`` items; a
   target's rank is its position in the list (beyond it: a miss). The list never holds the
   user's history (as served), so the ``_all`` figures count a target inside the history as a
   miss, like the history-removed ones.

It also reports recall@100 of each candidate source (how often the row's target is among the
items that source put forward), so a source that finds nothing is seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from streamrec.datasets.sequences import Example
from streamrec.model.sequence import Ensemble, SequenceRecommender
from streamrec.model.served_sequence import ServedSequence
from streamrec.ranking.blender import Blender
from streamrec.ranking.item_index import ItemIndex
from streamrec.settings import RecsSettings, StreamsSettings
from trainer.offline.blender_fit import fit_on_examples, user_sequences
from trainer.offline.pipeline import (
    InProcessSequenceScorer,
    OfflinePipeline,
    OfflineSignals,
    amazon_records,
    profile_from_history,
    rank_in_list,
)
from trainer.offline.sequence_eval import Split, metrics

Say = Callable[[str], None]


def _pipeline(index: ItemIndex, signals: OfflineSignals, model: SequenceRecommender, item_ids: Sequence[str],
              blender: Blender, recs: RecsSettings, streams: StreamsSettings) -> OfflinePipeline:
    served = ServedSequence(Ensemble([model]), list(item_ids))
    return OfflinePipeline(index, signals, InProcessSequenceScorer(served), blender, recs, streams)


async def _lists(pipeline: OfflinePipeline, rows: Sequence[Example], item_ids: Sequence[str], k: int
                 ) -> tuple[np.ndarray, dict[str, float]]:
    ranks, found, recommender = [], {}, pipeline.recommender()
    for row in rows:
        history = [item_ids[i] for i in row.history]
        target = item_ids[row.target]
        profile = profile_from_history(history, pipeline.index, pipeline.streams)
        outcome = await recommender.recommend("offline", k=k, exclude=history, profile=profile, profile_known=True)
        items = [item.item_id for item in outcome.recommendations.items]
        ranks.append(rank_in_list(items, target))
        candidates = outcome.candidate_ids or []
        if target in candidates:
            for source in (outcome.candidate_sources or [])[candidates.index(target)] | {"any"}:
                found[source] = found.get(source, 0) + 1
    return np.array(ranks, np.float64), {source: count / max(len(rows), 1) for source, count in found.items()}


def pipeline_rows(data_dir: Path, catalog, text: torch.Tensor, selection: Split, evaluation: Split,
                  held_model: SequenceRecommender, models: Sequence[SequenceRecommender], *, k: int = 20,
                  recs: RecsSettings | None = None, streams: StreamsSettings | None = None, say: Say = print
                  ) -> tuple[Blender, list[dict[str, float]]]:
    """The blender fitted on ``selection`` and the pipeline's metrics on ``evaluation``, one dict per model."""
    recs = recs or RecsSettings(k=max(k, 20))
    streams = streams or StreamsSettings()
    item_ids = list(catalog.item_ids)
    index = ItemIndex.from_records(amazon_records(data_dir, text.numpy()))
    held_sequences = user_sequences(selection.rows, item_ids)
    held = _pipeline(index, OfflineSignals.from_sequences(held_sequences.values(), streams), held_model, item_ids,
                     Blender.load(), recs, streams)
    blender = fit_on_examples(held, selection.rows, item_ids, sequences=held_sequences, rounds=1, say=say,
                              fitted_on={"rows": "the held-back last item of every fit sequence"})
    signals = OfflineSignals.from_sequences(([item_ids[i] for i in s] for s in evaluation.fit_sequences), streams)
    runs = []
    for n, model in enumerate(models):
        pipeline = _pipeline(index, signals, model, item_ids, blender, recs, streams)
        ranks, recall = asyncio.run(_lists(pipeline, evaluation.rows, item_ids, k))
        values = metrics(ranks)
        runs.append({**values, **{f"{name}_all": value for name, value in values.items()},
                     **{f"candidates_recall_{source}": share for source, share in recall.items()}})
        say(f"  pipeline with seed {n}'s scorer: NDCG@10 {values['ndcg10']:.4f}, target among the candidates "
            f"{recall.get('any', 0.0):.3f}")
    return blender, runs

