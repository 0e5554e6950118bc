"""One user's recommendation list: candidates → sequence BERT → blend → diversity → reasons.

The signal sources (co-visitation, profile vector, trending) gather candidates; one call to
the sequence model (``bert_scorer``) returns its own top ``sequence_candidates`` over the
whole catalog, which join the candidates (retrieval), and its score of every other candidate
(ranking). The blender combines that score, standardised within the list, with the signals.
When the scorer is down, its circuit is open or it misses the latency budget, the list is
served in the signals' order and marked ``degraded``; the next list tries the scorer again,
so serving recovers by itself when Triton is back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from streamrec.messages import Recommendations, RecommendedItem
from streamrec.ranking.blender import Blender, features, standardise
from streamrec.ranking.candidates import (
    CATEGORY_TRENDING,
    COVISIT,
    GLOBAL_TRENDING,
    SEQUENCE,
    Candidate,
    CandidateGenerator,
    CandidateSet,
)
from streamrec.ranking.diversity import mmr
from streamrec.ranking.item_index import ItemIndex
from streamrec.settings import RecsSettings
from streamrec.store.profile import RecentInteraction, UserProfile
from streamrec.store.profile_store import ProfileStore

VERBS = {"click": "viewed", "add_to_cart": "added to your cart", "purchase": "bought"}


class SequenceAnswer(Protocol):
    top_items: list[str]
    top_scores: np.ndarray
    candidate_scores: np.ndarray


class Scorer(Protocol):
    """The sequence model: its top ``k`` over the catalog and the scores of ``candidates``; a
    scorer that can pin a model version takes ``version=`` too (asked only by a variant that pins one)."""

    model: str

    async def rank(self, history: list[str], types: list[str], k: int, candidates: list[str]) -> SequenceAnswer: ...


OVER_BUDGET = "scorer over its latency budget"
# The rankings an experiment's variant may name besides "full" (see streamrec.experiments.definition):
# "signals" blends without the sequence model; these two order by one signal (ties by the other).
SINGLE_SIGNAL = {
    "covisit": Blender({"covisit": 1.0, "popularity": 1e-3}),
    "popularity": Blender({"popularity": 1.0, "covisit": 1e-3}),
}


def scorer_column(candidates: Sequence[Candidate]) -> np.ndarray:
    """The scorer feature: the model's scores standardised within the list; a candidate the model
    cannot score (unknown to it) gets the list's lowest score."""
    raw = np.array([c.scorer if c.scorer is not None else -np.inf for c in candidates], np.float64)
    finite = np.isfinite(raw)
    if not finite.any():
        return np.zeros(len(candidates), np.float32)
    raw[~finite] = raw[finite].min()
    return standardise(raw.astype(np.float32))


@dataclass
class Outcome:
    """How one list came about: for metrics, blender fitting and offline evaluation."""

    recommendations: Recommendations
    scorer_seconds: float | None
    candidates: int
    scored: int = 0  # candidates the scorer scored
    rows: np.ndarray | None = None  # the blender's feature rows, one per candidate
    pool: list[Candidate] | None = None  # the candidates, in the order of ``rows``

    @property
    def candidate_ids(self) -> list[str] | None:
        return None if self.pool is None else [c.item_id for c in self.pool]

    @property
    def candidate_sources(self) -> list[set[str]] | None:
        """Which sources found each candidate (asked for by evaluation, never on the serving path)."""
        return None if self.pool is None else [set(c.sources) for c in self.pool]


class Recommender:
    def __init__(
        self,
        profiles: ProfileStore | None,
        index: ItemIndex,
        generator: CandidateGenerator,
        scorer: Scorer | None,
        blender: Blender,
        settings: RecsSettings,
    ) -> None:
        self._profiles = profiles
        self.index = index
        self.generator = generator
        self.scorer = scorer
        self.blender = blender
        self.settings = settings

    def model_version(self) -> str:
        if self.scorer is None:
            return "signals"
        version = getattr(self.scorer, "served_version", None)
        return f"{self.scorer.model}:{version}" if version else self.scorer.model

    async def profile(self, user_id: str) -> UserProfile | None:
        """The stored profile; ``None`` for a new user (or one whose profile cannot be read)."""
        return await self._profiles.read(user_id)

    async def recommend(
        self,
        user_id: str,
        *,
        k: int | None = None,
        category: str | None = None,
        exclude: Sequence[str] = (),
        budget_s: float | None = None,
        profile: UserProfile | None = None,
        profile_known: bool = False,
        ranking: str = "full",
        variant: str | None = None,
        experiment: str | None = None,
        model_version: int | None = None,
    ) -> Outcome:
        """``ranking``: "full", "signals", "covisit" or "popularity" (an experiment's variant);
        ``model_version`` pins the sequence model's version (with "full");
        ``variant``/``experiment`` label the list (default: ``recs.variant``, no experiment)."""
        settings = self.settings
        k = k or settings.k
        if not profile_known:
            profile = await self.profile(user_id)
        found = await self.generator.generate(profile, exclude=exclude, category=category)
        degraded_reason, scorer_seconds, scored, answered_version = None, None, 0, None
        scorer = self.scorer if ranking == "full" else None
        pinned = {"version": str(model_version)} if model_version is not None else {}
        blender = SINGLE_SIGNAL.get(ranking, self.blender)
        if scorer is not None:
            recent = profile.recent if profile is not None else []
            started = time.perf_counter()
            try:
                answer = await asyncio.wait_for(
                    scorer.rank([i.item_id for i in recent], [i.type for i in recent], settings.sequence_candidates,
                                     list(found.candidates), **pinned),
                    timeout=budget_s or settings.scorer_budget_ms / 1000,
                )
            except TimeoutError:
                degraded_reason = OVER_BUDGET
            except Exception as error:  # noqa: BLE001 - any scorer failure degrades, never fails the list
                degraded_reason = f"scorer unavailable: {error}"[:300]
            else:
                scorer_seconds = time.perf_counter() - started
                answered_version = getattr(answer, "version", None) if pinned else None
                for item_id, score in zip(found.candidates, answer.candidate_scores, strict=False):
                    found.candidates[item_id].scorer = float(score)
                retrieved = dict(zip(answer.top_items, answer.top_scores, strict=True))
                for candidate in self.generator.extend(found, answer.top_items, SEQUENCE):
                    candidate.scorer = float(retrieved[candidate.item_id])
                scored = len(found.candidates)
        candidates = list(found.candidates.values())
        rows = features(candidates, scorer_column(candidates) if degraded_reason is None and scorer else None)
        final = blender.score(rows)
        order = np.argsort(-final, kind="stable")
        head = order[: max(settings.diversity_pool, k * 3)]
        picked = self._diversify(candidates, final, head, k)
        closest = self._closest([candidates[i] for i in picked], found.history)
        items = [self._item(candidates[i], rows[i], float(final[i]), found, closest) for i in picked]
        newest = profile.last_seen if profile is not None and profile.recent else None
        scored_ok = degraded_reason is None and scorer is not None
        recommendations = Recommendations(
            user_id=user_id,
            rec_id=uuid.uuid4().hex,
            items=items,
            model_version=(f"{scorer.model}:{answered_version}" if scored_ok and answered_version
                           else self.model_version() if scored_ok else ranking if ranking in SINGLE_SIGNAL else "signals"),
            variant=variant or settings.variant,
            experiment=experiment,
            generated_at=int(time.time() * 1000),
            source_event_ts=newest,
            degraded=degraded_reason is not None,
            degraded_reason=degraded_reason,
        )
        return Outcome(recommendations, scorer_seconds, len(candidates), scored=scored, rows=rows, pool=candidates)

    def _diversify(self, candidates: list[Candidate], scores: np.ndarray, head: np.ndarray, k: int) -> list[int]:
        head = head[np.argsort(-scores[head], kind="stable")]
        ids = [candidates[i].item_id for i in head]
        vectors = self.index.vectors(ids)
        categories = [(self.index.info(item_id).category if self.index.info(item_id) else None) for item_id in ids]
        return [int(head[p]) for p in mmr(scores[head], vectors, categories, k, self.settings.mmr_lambda)]

    def _item(self, candidate: Candidate, row: np.ndarray, score: float, found: CandidateSet,
              closest: dict[str, RecentInteraction]) -> RecommendedItem:
        reason, reason_item = self._reason(candidate, row, found, closest)
        return RecommendedItem(
            item_id=candidate.item_id,
            score=round(score, 6),
            reason=reason,
            reason_item=reason_item,
            sources=sorted(candidate.sources),
        )

    def _reason(self, candidate: Candidate, row: np.ndarray, found: CandidateSet,
                closest: dict[str, RecentInteraction]) -> tuple[str, str | None]:
        """Name what contributed most: a history item (co-visit, similarity, BERT) or a trend."""
        parts = self.blender.contributions(row)
        personal = {name: parts[name] for name in ("covisit", "similarity", "scorer", "recency")}
        trend = {name: parts[name] for name in ("popularity", "affinity")}
        history = found.history
        if history and max(personal.values()) >= max(trend.values()):
            if max(personal, key=personal.get) in ("covisit", "recency") and candidate.covisit_from:
                source = next((h for h in history if h.item_id == candidate.covisit_from), history[0])
                return self._because(source.item_id, source.type, "shoppers who"), source.item_id
            source = closest[candidate.item_id]
            return self._because(source.item_id, source.type, None), source.item_id
        info = self.index.info(candidate.item_id)
        if CATEGORY_TRENDING in candidate.sources and info is not None and info.category:
            return f"trending in {info.category}", None
        if COVISIT in candidate.sources and candidate.covisit_from:
            return self._because(candidate.covisit_from, "click", "shoppers who"), candidate.covisit_from
        if GLOBAL_TRENDING in candidate.sources or not history:
            return "trending now", None
        return "popular with shoppers like you", None

    def _closest(self, candidates: list[Candidate], history: list[RecentInteraction]) -> dict[str, RecentInteraction]:
        """Each candidate's most similar item among the newest 20 of the history (one product)."""
        if not history or not candidates:
            return {}
        recent = history[:20]
        similarities = self.index.vectors([c.item_id for c in candidates]) @ self.index.vectors([h.item_id for h in recent]).T
        return {c.item_id: recent[int(best)] for c, best in zip(candidates, similarities.argmax(axis=1), strict=True)}

    def _because(self, item_id: str, kind: str, prefix: str | None) -> str:
        info = self.index.info(item_id)
        title = info.title if info is not None else item_id
        if prefix:  # co-visitation: other shoppers' behaviour links the two items
            return f"because you {VERBS.get(kind, 'viewed')} {title} (often viewed together)"
        return f"because you {VERBS.get(kind, 'viewed')} {title}"
