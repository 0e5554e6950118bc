"""The HTTP recommendation API (FastAPI; OpenAPI docs at ``/docs``).

``GET /v1/users/{user_id}/recommendations`` answers from the list the real-time loop cached
in Redis when it is still current (computed after the user's newest event) and needs no
category filter; otherwise it computes one within ``compute_budget_ms`` of scorer time
(degraded to the signals' order past it). Unknown users get trending items.
``GET /v1/items/{item_id}/similar`` searches the item index by the item's text embedding, so
an item is similar-searchable as soon as the streams worker has embedded it.
Both need a key with the scope ``recs:read`` when ``auth.enabled`` (:mod:`serving.access`);
``/healthz``, ``/metrics`` and the OpenAPI docs stay open.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from redis.exceptions import BusyLoadingError, ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from serving.access import Access, Limits
from serving.engine.service import RecsService
from streamrec.auth.ratelimit import Rate
from streamrec.messages import Recommendations, RecommendedItem, UnreadableMessage
from streamrec.settings import Settings


class RecommendationsOut(Recommendations):
    """The list as the real-time loop publishes it, and whether it came from its cache."""

    cached: bool = Field(description="Served from the real-time loop's cache.")


class SimilarOut(BaseModel):
    item_id: str
    items: list[dict[str, float | str]]


STORE_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError)


class RecsApi:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service = RecsService(settings, scorer_timeout_s=max(0.2, settings.api.compute_budget_ms / 1000))
        auth = settings.auth
        self.access = Access(
            settings,
            service="api",
            registry=self.service.metrics.registry,
            limits=Limits(key=Rate(auth.api_key_rate, auth.api_key_burst), address=Rate(auth.api_address_rate, auth.api_address_burst)),
        )

    async def recommendations(
        self,
        user_id: str,
        k: Annotated[int | None, Query(ge=1, description="Items to return (default: api.default_k).")] = None,
        category: Annotated[str | None, Query(description="Only items of this category.")] = None,
        exclude: Annotated[list[str] | None, Query(description="Item ids to leave out (repeat the parameter).")] = None,
    ) -> RecommendationsOut | JSONResponse:
        try:
            return await self._recommendations(user_id, k, category, exclude)
        except STORE_UNAVAILABLE as error:
            return self._without_store(user_id, k, exclude, error)

    def _without_store(self, user_id: str, k: int | None, exclude: list[str] | None, error: Exception) -> RecommendationsOut | JSONResponse:
        """The trending items as last read, degraded, while Redis cannot be read."""
        api = self.settings.api
        excluded = set(exclude or ())
        items = [item for item in self.service.trending_snapshot if item not in excluded][: min(k or api.default_k, api.max_k)]
        self.service.metrics.api_store_unavailable.inc()
        if not items:
            return JSONResponse({"error": f"the store is unavailable and no fallback list is known yet: {error}"},
                                status_code=503, headers={"Retry-After": "1"})
        now = int(time.time() * 1000)
        return RecommendationsOut(
            user_id=user_id, rec_id=uuid.uuid4().hex, model_version="fallback", variant=self.settings.recs.variant,
            experiment=None,
            items=[RecommendedItem(item_id=item, score=0.0, reason="popular recently", sources=["trending"]) for item in items],
            generated_at=now, source_event_ts=None, degraded=True,
            degraded_reason=f"store unavailable ({type(error).__name__}): trending items as last read", cached=False,
        )

    async def _recommendations(
        self, user_id: str, k: int | None, category: str | None, exclude: list[str] | None
    ) -> RecommendationsOut:
        started = time.perf_counter()
        api = self.settings.api
        k = min(k or api.default_k, api.max_k)
        excluded = set(exclude or ())
        cached_raw, profile = await self.service.cache.read_with_profile(user_id, self.service.profiles)
        cached = None
        if cached_raw is not None and category is None:
            try:
                cached = Recommendations.decode(cached_raw)
            except UnreadableMessage:
                cached = None  # computed afresh below, as for a cache miss
        if cached is not None:
            current = ((profile is None or (cached.source_event_ts or 0) >= profile.last_seen)
                       and (cached.experiment, cached.variant) == self.service.router.labels(user_id))
            items = [item for item in cached.items if item.item_id not in excluded]
            # A degraded cached list is still served: recomputing it while the scorer is down would
            # cost every request the candidate stage and give the same answer.
            if current and len(items) >= k:
                self.service.metrics.api_seconds.labels("recommendations", "true").observe(time.perf_counter() - started)
                return RecommendationsOut(**{**dict(cached), "items": items[:k], "cached": True})
        outcome, served = await self.service.router.recommend(
            user_id,
            k=k,
            category=category,
            exclude=list(excluded),
            budget_s=api.compute_budget_ms / 1000,
            profile=profile,
            profile_known=True,
        )
        self.service.metrics.observe(outcome, "api")
        if self.service.router.experiment is not None:
            await self.service.guardrails.add([served])
        self.service.metrics.api_seconds.labels("recommendations", "false").observe(time.perf_counter() - started)
        return RecommendationsOut(**dict(outcome.recommendations), cached=False)

    async def similar(
        self, item_id: str, k: Annotated[int, Query(ge=1, le=200, description="Items to return.")] = 10
    ) -> SimilarOut:
        started = time.perf_counter()
        index = self.service.index
        try:
            await index.ensure([item_id])
        except STORE_UNAVAILABLE:
            pass  # answer from the index as it is: it holds every item read so far
        if index.info(item_id) is None:
            raise HTTPException(status_code=404, detail=f"item {item_id!r} is not in the catalog (or not embedded yet)")
        found = index.nearest(index.vectors([item_id])[0], k, exclude={item_id})
        self.service.metrics.api_seconds.labels("similar", "false").observe(time.perf_counter() - started)
        return SimilarOut(
            item_id=item_id,
            items=[{"item_id": other, "score": round(score, 6), "title": index.info(other).title} for other, score in found],
        )

    async def healthz(self) -> JSONResponse:
        try:
            await self.service.redis.ping()
        except STORE_UNAVAILABLE as error:
            return JSONResponse({"status": "down", "error": f"Redis not reachable: {error}"}, status_code=503)
        return JSONResponse({"status": "ok", "items": len(self.service.index)})

    async def metrics_page(self) -> Response:
        return Response(generate_latest(self.service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings) -> FastAPI:
    api = RecsApi(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        api.access.announce(settings.api.host)
        await api.service.start()
        # The item index and the app are long-lived: move them out of the collector's reach so a
        # full collection never walks them (cheap; its effect on the p99 was within noise here).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await api.service.close()
            await api.access.close()

    app = FastAPI(title="streamrec recommendations", lifespan=lifespan)
    app.state.api = api
    api.access.install(app)
    reader = [Depends(api.access.require("recs:read"))]
    app.add_api_route(
        "/v1/users/{user_id}/recommendations",
        api.recommendations,
        methods=["GET"],
        response_model=RecommendationsOut,
        dependencies=reader,
        summary="A user's recommendations, with a reason per item.",
    )
    app.add_api_route(
        "/v1/items/{item_id}/similar", api.similar, methods=["GET"], response_model=SimilarOut, dependencies=reader,
        summary="Items whose text is closest to this item's.",
    )
    app.add_api_route("/healthz", api.healthz, methods=["GET"], summary="Redis reachable; item index size.")
    app.add_api_route("/metrics", api.metrics_page, methods=["GET"], summary="Prometheus metrics.")
    return app
