"""The serving pipeline on logged sequences instead of the live stack (no Kafka, Redis or Triton).

The quality benchmark and ``streamrec trainer fit-blender`` both need what the recs worker would
have produced for a user with a given history. They get it from serving's own code: the
:class:`~streamrec.ranking.candidates.CandidateGenerator` over :class:`OfflineSignals` (co-visitation and
popularity counted from training sequences), an in-memory :class:`ItemIndex`, and the unchanged
:class:`~streamrec.ranking.recommender.Recommender`. Profiles and co-visit pairs come from the
streams worker's own fold (:mod:`streamrec.profile_fold`), so offline rows see the signals the
worker would have stored.

Differences from the live signals, all forced by the data: the source sequences have no
timestamps, so one user's consecutive items count as one visit (the co-visit time window never
cuts a pair; the last ``covisit_history`` items do), and "trending" is popularity over the whole
training file rather than over the last hour.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from streamrec.ranking.blender import Blender
from streamrec.ranking.candidates import CandidateGenerator, SignalStore
from streamrec.ranking.item_index import ItemIndex
from streamrec.ranking.recommender import Recommender, Scorer
from streamrec.datasets.amazon_pairs import load_catalog
from streamrec.datasets.loaders import load_amazon
from streamrec.profile_fold import apply_interaction, remember_covisit
from streamrec.settings import RecsSettings, StreamsSettings
from streamrec.store.catalog import CatalogRecord
from streamrec.store.profile import RecentInteraction, UserProfile

# Spacing of a history's items in a profile: one a day, as the Amazon replay spaces purchases
# (streamrec.datasets.loaders.load_amazon), so the profile vector and affinities decay as there.
PROFILE_STEP_MS = 86_400_000
PROFILE_START_MS = 1_600_000_000_000
EVENT_TYPE = "click"


def sequence_pairs(sequence: Sequence[str], settings: StreamsSettings, *, start: int = 0) -> Counter[tuple[str, str]]:
    """Ordered co-visit pairs the streams worker counts for one user's sequence.

    The worker's rule (:func:`~streamrec.profile_fold.remember_covisit`) over one visit: each
    new item pairs with every other item among the user's last ``covisit_history`` events of
    its type (an item repeated there pairs again), and each pair is counted in both directions.
    Only pairs made when the item at position ``start`` or later arrives are returned
    (``start > 0``: the pairs a prefix of the sequence has not made yet).
    """
    history: list[RecentInteraction] = []
    pairs: Counter[tuple[str, str]] = Counter()
    for position, item_id in enumerate(sequence):
        entry = RecentInteraction(position, item_id, EVENT_TYPE)
        neighbours = remember_covisit(history, entry, window_ms=math.inf, keep=settings.covisit_history)
        if position >= start:
            for neighbour in neighbours:
                pairs[(item_id, neighbour)] += 1
                pairs[(neighbour, item_id)] += 1
    return pairs


def _ranked(counts: dict[str, float]) -> list[tuple[str, float]]:
    """Strongest first; ties in descending member order, as Redis ZREVRANGE returns them."""
    return sorted(((item, float(count)) for item, count in counts.items() if count > 0), reverse=True,
                  key=lambda pair: (pair[1], pair[0]))


class OfflineSignals(SignalStore):
    """Co-visitation and popularity counted from training sequences, behind serving's protocol.

    :meth:`before` gives a view for "logged" rows taken from the same sequences: it hides what
    the user did from a position on, so a row's own next item never lifts its own signals.
    """

    def __init__(
        self,
        neighbours: dict[str, list[tuple[str, float]]],
        popular: list[tuple[str, float]],
        top_n: int,
        *,
        hidden_pairs: dict[str, Counter[str]] | None = None,
        hidden_items: Counter[str] | None = None,
    ) -> None:
        self._neighbours = neighbours
        self._popular = popular
        self.top_n = top_n
        self._hidden_pairs = hidden_pairs or {}
        self._hidden_items = hidden_items or Counter()

    @classmethod
    def from_sequences(cls, sequences: Iterable[Sequence[str]], settings: StreamsSettings) -> OfflineSignals:
        pairs: dict[str, Counter[str]] = {}
        items: Counter[str] = Counter()
        for sequence in sequences:
            items.update(sequence)
            for (item_id, neighbour), count in sequence_pairs(sequence, settings).items():
                pairs.setdefault(item_id, Counter())[neighbour] += count
        neighbours = {item_id: _ranked(counts) for item_id, counts in pairs.items()}
        return cls(neighbours, _ranked(items), settings.covisit_top_n)

    def before(self, sequence: Sequence[str], start: int, settings: StreamsSettings) -> OfflineSignals:
        """These signals without the user's own events from position ``start`` of ``sequence`` on."""
        hidden: dict[str, Counter[str]] = {}
        for (item_id, neighbour), count in sequence_pairs(sequence, settings, start=start).items():
            hidden.setdefault(item_id, Counter())[neighbour] += count
        return OfflineSignals(self._neighbours, self._popular, self.top_n,
                              hidden_pairs=hidden, hidden_items=Counter(sequence[start:]))

    @staticmethod
    def _top(ranked: list[tuple[str, float]], hidden: Counter[str], count: int) -> list[tuple[str, float]]:
        if not hidden:
            return ranked[:count]
        # Hiding only lowers counts, so the true top ``count`` lies within the first count + |hidden|.
        head = dict(ranked[: count + len(hidden)])
        for item_id, minus in hidden.items():
            if item_id in head:
                head[item_id] -= minus
        return _ranked(head)[:count]

    async def covisit(self, item_ids: Sequence[str], per_item: int) -> list[list[tuple[str, float]]]:
        out = []
        for item_id in item_ids:
            kept = self._top(self._neighbours.get(item_id, []), self._hidden_pairs.get(item_id, Counter()), self.top_n)
            out.append(kept[:per_item])  # the worker keeps top_n per item; serving reads per_item of them
        return out

    async def trending(self, count: int) -> list[str]:
        return [item_id for item_id, _ in self._top(self._popular, self._hidden_items, count)]


def profile_from_history(history: Sequence[str], index: ItemIndex, settings: StreamsSettings) -> UserProfile:
    """The profile the streams worker would hold after these items, clicked a day apart, oldest first.

    Built with the worker's fold; an item's category and embedding come from ``index`` as the
    worker's come from the catalog (an item the index does not know counts without them).
    """
    profile = UserProfile()
    for position, item_id in enumerate(history):
        info = index.info(item_id)
        apply_interaction(
            profile,
            user_id="offline",
            event_type=EVENT_TYPE,
            item_id=item_id,
            ts=PROFILE_START_MS + position * PROFILE_STEP_MS,
            category=info.category if info is not None else None,
            embedding=index.vectors([item_id])[0] if info is not None else None,
            settings=settings,
        )
    return profile


def amazon_records(data_dir: Path, embeddings: np.ndarray) -> list[CatalogRecord]:
    """Catalog records of Amazon Scientific in item-index order (item id = ASIN), with embeddings.

    Row ``i`` of ``embeddings`` belongs to item index ``i`` (``Scientific.item2index``), the order
    :func:`~streamrec.datasets.amazon_pairs.load_catalog` and the models use.
    """
    catalog = load_catalog(data_dir)
    if embeddings.shape[0] != len(catalog):
        raise ValueError(f"{embeddings.shape[0]} embeddings for {len(catalog)} items")
    parsed = {item.item_id: item for item in load_amazon(data_dir).catalog}
    records = []
    for row, asin in enumerate(catalog.item_ids):
        item = parsed[asin]
        records.append(CatalogRecord(
            item_id=asin, title=item.title, category_path=item.category_path, brand=item.brand, price=None,
            currency=None, available=True, updated_ts=0, embedding=embeddings[row].astype(np.float16),
        ))
    return records


class InProcessSequenceScorer:
    """The sequence model in this process, answering as ``bert_scorer`` on Triton does."""

    def __init__(self, served, model: str = "bert_scorer") -> None:
        self.served = served  # a streamrec.model.served_sequence.ServedSequence
        self.model = model

    async def rank(self, history: list[str], types: list[str], k: int, candidates: list[str], version: str | None = None):
        if version is not None:
            raise ValueError("the in-process scorer is one version; pin versions on Triton")
        ranked = self.served.rank([history], types=[types], k=k, candidates=[candidates])
        kept = [n for n, item in enumerate(ranked.top_items[0]) if item]
        return SimpleNamespace(top_items=[ranked.top_items[0][n] for n in kept], top_scores=ranked.top_scores[0][kept],
                               candidate_scores=ranked.candidate_scores[0])


def rank_in_list(items: Sequence[str], target: str) -> float:
    """1-based position of ``target`` in a served list; ``inf`` when the list does not hold it."""
    for position, item_id in enumerate(items):
        if item_id == target:
            return float(position + 1)
    return math.inf


class OfflinePipeline:
    """Serving's :class:`Recommender` for a history of item ids, over offline signals."""

    def __init__(
        self,
        index: ItemIndex,
        signals: OfflineSignals,
        scorer: Scorer | None,
        blender: Blender,
        recs: RecsSettings,
        streams: StreamsSettings,
    ) -> None:
        self.index = index
        self.signals = signals
        self.scorer = scorer
        self.blender = blender
        self.recs = recs
        self.streams = streams

    def recommender(self, signals: SignalStore | None = None, scorer: Scorer | None = None,
                    generator: CandidateGenerator | None = None) -> Recommender:
        """A Recommender without Redis: callers pass the profile, so it never reads one."""
        generator = generator or CandidateGenerator(self.index, signals or self.signals, self.recs)
        return Recommender(None, self.index, generator, scorer or self.scorer, self.blender, self.recs)

    async def recommend(self, history: Sequence[str], *, k: int, signals: SignalStore | None = None) -> list[str]:
        """Item ids, best first; the user's own history is never recommended (as in the benchmark)."""
        profile = profile_from_history(history, self.index, self.streams)
        outcome = await self.recommender(signals).recommend(
            "offline", k=k, exclude=list(history), profile=profile, profile_known=True
        )
        return [item.item_id for item in outcome.recommendations.items]
