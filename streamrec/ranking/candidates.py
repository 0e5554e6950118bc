"""Candidate generation: about 200 items per user, each with the signals that produced it.

Sources, unioned:

- **co-visitation** neighbours (``cv:{item}``) of the user's newest distinct items, weighted
  by the neighbour count and by how recent the history item is;
- the **nearest items to the profile vector** (exact search in :class:`ItemIndex`);
- **trending in the user's strongest categories** and **global trending** (short-term
  popularity, ``z:pop:short``); a user without a profile gets global trending only;
- the **sequence model's top K** over the whole catalog (``bert_scorer``), added by the
  recommender with :meth:`CandidateGenerator.extend` once the model has answered.

Purchased and unavailable items never become candidates, nor do the newest few items the
user has just interacted with. The signals are stored on each candidate whichever source
found it, so the ranker sees the same features for every item.

The stores behind the sources are a protocol (:class:`SignalStore`): serving reads them from
Redis (:class:`streamrec.store.item_statistics.ItemStatistics`), and the quality benchmark runs
this exact code on signals computed from a training file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from streamrec.ranking.item_index import ItemIndex
from streamrec.settings import RecsSettings
from streamrec.store.profile import RecentInteraction, UserProfile

COVISIT = "covisit"
VECTOR = "vector"
CATEGORY_TRENDING = "category_trending"
GLOBAL_TRENDING = "trending"
SEQUENCE = "sequence"


class SignalStore(Protocol):
    async def covisit(self, item_ids: Sequence[str], per_item: int) -> list[list[tuple[str, float]]]:
        """Co-visitation neighbours with their weights, strongest first, one list per item."""
        ...

    async def trending(self, count: int) -> list[str]:
        """The most popular items now, most popular first."""
        ...


@dataclass
class Candidate:
    item_id: str
    sources: set[str] = field(default_factory=set)
    covisit: float = 0.0  # Σ neighbour weight × recency of the history item
    covisit_from: str | None = None  # the history item that contributed most
    similarity: float = 0.0  # cosine to the profile vector
    popularity: float = 0.0  # 1 for the most popular item now, falling to 0 at the end of the pool
    affinity: float = 0.0  # the user's affinity for the item's category, relative to their strongest
    recency: float = 0.0  # recency weight of the history item behind the co-visit (1 = newest)
    scorer: float | None = None  # the sequence model's score (None: not scored)


@dataclass(frozen=True)
class TrendingView:
    """What every list takes from one trending pool: popularity by rank, the pool per category."""

    pool: list[str]
    index_version: int
    popularity: dict[str, float]  # 1 for the most popular item, falling towards 0 at the pool's end
    by_category: dict[str, list[str]]  # category -> its items in pool order


@dataclass
class CandidateSet:
    candidates: dict[str, Candidate]
    history: list[RecentInteraction]  # newest first, distinct items
    excluded: set[str] = field(default_factory=set)
    category: str | None = None
    popularity: dict[str, float] = field(default_factory=dict)
    affinities: dict[str, float] = field(default_factory=dict)
    vector: np.ndarray | None = None


def distinct_history(profile: UserProfile) -> list[RecentInteraction]:
    """The user's interactions newest first, one per item (its newest)."""
    seen: set[str] = set()
    out = []
    for interaction in reversed(profile.recent):
        if interaction.item_id not in seen:
            seen.add(interaction.item_id)
            out.append(interaction)
    return out


class CandidateGenerator:
    def __init__(self, index: ItemIndex, signals: SignalStore, settings: RecsSettings) -> None:
        self.index = index
        self.signals = signals
        self.settings = settings
        self._pool_view: TrendingView | None = None

    def trending_view(self, pool: list[str]) -> TrendingView:
        """The pool's popularity and per-category order, worked out once per pool and index
        state: every list of a batch (and of the next second) draws from the same pool."""
        view = self._pool_view
        if view is None or view.index_version != self.index.version or view.pool != pool:
            by_category: dict[str, list[str]] = {}
            for item_id in pool:
                info = self.index.info(item_id)
                if info is not None and info.category is not None:
                    by_category.setdefault(info.category, []).append(item_id)
            popularity = {item_id: 1.0 - rank / len(pool) for rank, item_id in enumerate(pool)}
            view = self._pool_view = TrendingView(list(pool), self.index.version, popularity, by_category)
        return view

    async def generate(
        self, profile: UserProfile | None, *, exclude: Sequence[str] = (), category: str | None = None
    ) -> CandidateSet:
        settings = self.settings
        history = distinct_history(profile) if profile is not None else []
        excluded = set(exclude)
        if profile is not None:
            excluded.update(profile.purchased)
            excluded.update(interaction.item_id for interaction in history[: settings.exclude_recent])
        found: dict[str, Candidate] = {}

        def candidate(item_id: str) -> Candidate | None:
            if item_id in excluded:
                return None
            info = self.index.info(item_id)
            if info is None or not info.available or (category is not None and info.category != category):
                return None
            if item_id not in found:
                found[item_id] = Candidate(item_id)
            return found[item_id]

        def take(item_ids: Iterable[str], source: str, limit: int, total: int | None = None) -> None:
            """Tag up to ``limit`` eligible items with ``source``; stop once ``total`` candidates exist."""
            taken = 0
            for item_id in item_ids:
                if taken >= limit or (total is not None and len(found) >= total):
                    break
                found_candidate = candidate(item_id)
                if found_candidate is not None:
                    found_candidate.sources.add(source)
                    taken += 1

        # Co-visitation neighbours of the newest distinct history items.
        sources = history[: settings.covisit_sources]
        neighbour_lists = await self.signals.covisit([h.item_id for h in sources], settings.covisit_per_item)
        best_contribution: dict[str, float] = {}
        for rank, (source, neighbours) in enumerate(zip(sources, neighbour_lists, strict=True)):
            recency = 0.5 ** (rank / 3)  # the fourth-newest item counts half as much as the newest
            for item_id, weight in neighbours:
                found_candidate = candidate(item_id)
                if found_candidate is None:
                    continue
                contribution = weight * recency
                found_candidate.sources.add(COVISIT)
                found_candidate.covisit += contribution
                if contribution > best_contribution.get(item_id, 0.0):
                    best_contribution[item_id] = contribution
                    found_candidate.covisit_from = source.item_id
                    found_candidate.recency = recency

        # Nearest items to the profile vector.
        vector = profile.vector if profile is not None else None
        if vector is not None and settings.vector_candidates and len(self.index):
            # Ask for more than needed: a category filter may drop some of them.
            wanted = settings.vector_candidates * (4 if category is not None else 1)
            nearest = self.index.nearest(vector.astype(np.float32), wanted, exclude=excluded)
            take((item_id for item_id, _ in nearest), VECTOR, settings.vector_candidates)

        # Trending: in the user's strongest categories, then globally.
        pool = await self.signals.trending(settings.trending_pool)
        view = self.trending_view(pool)
        popularity = view.popularity
        affinities = profile.affinities if profile is not None else {}
        strongest = sorted(affinities, key=affinities.get, reverse=True)[: settings.categories_top]
        if category is not None:
            strongest = [category]
        for wanted in strongest:
            take(view.by_category.get(wanted, ()), CATEGORY_TRENDING, settings.per_category)
        global_count = settings.trending_candidates if history else settings.candidates
        take(pool, GLOBAL_TRENDING, global_count, total=settings.candidates)

        # Features every candidate gets, whichever source found it.
        strongest_affinity = max(affinities.values(), default=0.0)
        ids = list(found)
        if vector is not None and ids and len(self.index):
            unit = vector.astype(np.float32)
            norm = float(np.linalg.norm(unit))
            if norm > 0 and unit.shape[0] == self.index.dim:
                similarities = self.index.vectors(ids) @ (unit / norm)
                for item_id, similarity in zip(ids, similarities, strict=True):
                    found[item_id].similarity = float(similarity)
        for item_id in ids:
            found_candidate = found[item_id]
            found_candidate.popularity = popularity.get(item_id, 0.0)
            info = self.index.info(item_id)
            if strongest_affinity > 0 and info is not None and info.category is not None:
                found_candidate.affinity = affinities.get(info.category, 0.0) / strongest_affinity
        kept = _limit(found, settings.candidates)
        return CandidateSet(candidates=kept, history=history, excluded=excluded, category=category,
                            popularity=popularity, affinities=affinities, vector=vector)

    def extend(self, found: CandidateSet, item_ids: Iterable[str], source: str) -> list[Candidate]:
        """Tag ``item_ids`` with ``source``, adding the eligible new ones with their signals
        (no co-visitation: an item co-visited with the history is a candidate already)."""
        added, tagged = [], []
        for item_id in item_ids:
            if item_id in found.candidates:
                found.candidates[item_id].sources.add(source)
                tagged.append(found.candidates[item_id])
                continue
            info = self.index.info(item_id)
            if item_id in found.excluded or info is None or not info.available:
                continue
            if found.category is not None and info.category != found.category:
                continue
            candidate = Candidate(item_id, sources={source}, popularity=found.popularity.get(item_id, 0.0))
            strongest = max(found.affinities.values(), default=0.0)
            if strongest > 0 and info.category is not None:
                candidate.affinity = found.affinities.get(info.category, 0.0) / strongest
            found.candidates[item_id] = candidate
            added.append(candidate)
        vector = found.vector
        if added and vector is not None and len(self.index):
            norm = float(np.linalg.norm(vector))
            if norm > 0 and vector.shape[0] == self.index.dim:
                similarities = self.index.vectors([c.item_id for c in added]) @ (vector.astype(np.float32) / norm)
                for candidate, similarity in zip(added, similarities, strict=True):
                    candidate.similarity = float(similarity)
        return tagged + added


def _limit(found: dict[str, Candidate], count: int) -> dict[str, Candidate]:
    """Keep at most ``count``: co-visited first, then by similarity, then by popularity."""
    if len(found) <= count:
        return found
    order = sorted(found.values(), key=lambda c: (c.covisit, c.similarity, c.popularity), reverse=True)
    return {c.item_id: c for c in order[:count]}
