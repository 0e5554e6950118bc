"""Builds the recommender from settings: one place for the worker and the API to share.

Owns the clients (Redis, Triton scorer), the stores over Redis and the item index with its
refresh loop, and closes them in reverse order. Nothing here is global: each process makes one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

from serving.engine.metrics import RecsMetrics
from serving.engine.sequence_client import TritonSequenceClient
from serving.engine.variants import VariantRouter
from streamrec.experiments.store import ExperimentStore, RunningExperiment
from streamrec.ranking.blender import Blender
from streamrec.ranking.candidates import CandidateGenerator
from streamrec.ranking.item_index import ItemIndex
from streamrec.ranking.recommender import Recommender
from streamrec.settings import Settings
from streamrec.store.catalog_store import CatalogStore
from streamrec.store.connection import connect
from streamrec.store.guardrails import GuardrailStore
from streamrec.store.item_statistics import ItemStatistics
from streamrec.store.profile_store import ProfileStore
from streamrec.store.recommendation_cache import RecommendationCache

log = logging.getLogger(__name__)


def settle_heap() -> None:
    """Take what the process now holds for good (the item index: a few objects per catalog item,
    hundreds of thousands for a real catalog) out of the cyclic collector's full passes.

    Without it every full collection walks the whole index: about 150 ms of stopped event loop
    each time with 16k items, several times a minute under load. Frozen objects are still freed
    by reference counting when the index drops them (they hold no cycles), so a catalog update
    leaks nothing.
    """
    gc.freeze()


class RecsService:
    def __init__(self, settings: Settings, *, scorer_timeout_s: float | None = None) -> None:
        self.settings = settings
        recs = settings.recs
        self.redis = connect(settings.redis)
        self.profiles = ProfileStore(self.redis)
        self.cache = RecommendationCache(self.redis)
        self.index = ItemIndex(CatalogStore(self.redis))
        self.metrics = RecsMetrics()
        self.metrics.unreadable_profiles.set_function(lambda: self.profiles.unreadable)
        self.scorer = (
            TritonSequenceClient.from_settings(
                settings,
                model=recs.scorer_model,
                timeout_s=scorer_timeout_s or max(0.5, recs.scorer_budget_ms / 1000),
                max_batch=recs.batch_max_users,
                breaker_failures=3,
                breaker_reset_s=2.0,
            )
            if recs.scorer_enabled
            else None
        )
        self.recommender = Recommender(
            self.profiles,
            self.index,
            CandidateGenerator(self.index, ItemStatistics(self.redis), recs),
            self.scorer,
            Blender.load(recs.blender_weights),
            recs,
        )
        self.experiments = RunningExperiment(ExperimentStore(self.redis), refresh_s=recs.experiments_refresh_s)
        self.router = VariantRouter(self.recommender, self.experiments, recs.variant)
        self.guardrails = GuardrailStore(self.redis)
        self._refresher: asyncio.Task | None = None
        # The trending items as last read, for lists served while Redis cannot be read at all.
        self.trending_snapshot: list[str] = []

    async def start(self) -> None:
        """Load the item index and the trending snapshot, then keep both fresh in the background."""
        await self.index.refresh()
        settle_heap()
        self.metrics.index_items.set(len(self.index))
        self.trending_snapshot = await ItemStatistics(self.redis).trending(self.settings.recs.k)
        await self.experiments.start()
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.recs.index_refresh_s)
            try:
                if await self.index.refresh():
                    settle_heap()
                self.metrics.index_items.set(len(self.index))
                self.trending_snapshot = await ItemStatistics(self.redis).trending(self.settings.recs.k)
            except Exception:  # Redis away for a moment: keep serving from the index we have
                log.exception("item index refresh failed")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.experiments.close()
        if self.scorer is not None:
            await self.scorer.close()
        await self.redis.aclose()
