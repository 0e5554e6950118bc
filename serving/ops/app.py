"""The operations service's HTTP side: the live page, its JSON, /metrics and /healthz."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib.resources import files

from fastapi import FastAPI, Response
from fastapi.responses import HTMLResponse, ORJSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamrec.settings import Settings
from serving.ops.overview import build_overview
from serving.ops.service import OpsService


def create_app(settings: Settings) -> FastAPI:
    service = OpsService(settings)
    page = files("serving.ops").joinpath("static/index.html").read_text()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(service.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="streamrec operations", lifespan=lifespan)
    app.state.service = service

    @app.get("/", response_class=HTMLResponse, summary="The live operations page.")
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/overview", response_class=ORJSONResponse, summary="Every figure the page shows, as JSON.")
    async def overview() -> ORJSONResponse:
        return ORJSONResponse(build_overview(service))

    @app.get("/api/groups", response_class=ORJSONResponse, summary="Every consumer group with its partitions (as `streamrec lag --json`).")
    async def groups() -> ORJSONResponse:
        return ORJSONResponse([report.as_dict() for report in service.state.reports])

    @app.get("/metrics", summary="Prometheus metrics: lag, statuses, canary, data quality, Triton readiness.")
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", summary="The service runs and has read the consumer groups at least once.")
    async def healthz() -> ORJSONResponse:
        ready = service.state.reports_at is not None
        body = {"ok": ready, "lag_error": service.state.lag_error, "sampled_at": service.state.reports_at}
        return ORJSONResponse(body, status_code=200 if ready else 503)

    return app
