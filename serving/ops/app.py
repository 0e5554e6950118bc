"""The operations service's HTTP side: the live page, its JSON, the admin actions, /metrics and /healthz.

With ``auth.enabled`` the page and its JSON need a key with ``ops:read`` and the admin actions one
with ``admin`` (:mod:`serving.access`); a browser opening the page is asked for the key as the
password of an HTTP login (any user name). ``/healthz`` and ``/metrics`` stay open.

The experiment actions are those of ``streamrec experiments`` over HTTP: creating and stopping
need ``admin``, listing and reports ``ops:read``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from importlib.resources import files

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, ORJSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from streamrec.experiments.definition import Experiment
from streamrec.experiments.store import ExperimentError, ExperimentStore
from streamrec.settings import Settings
from streamrec.store.connection import connect
from serving.access import Access, Limits
from serving.ops.overview import build_overview
from serving.ops.service import OpsService

log = logging.getLogger(__name__)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: int | None = Field(default=None, ge=1, description="Version to serve (default: the one before the served one).")


def create_app(settings: Settings) -> FastAPI:
    service = OpsService(settings)
    access = Access(settings, service="ops", registry=service.metrics.registry, limits=Limits.none(), browser_login=True)
    page = files("serving.ops").joinpath("static/index.html").read_text()
    rolling_back = asyncio.Lock()
    redis = connect(settings.redis)
    experiments = ExperimentStore(redis)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        access.announce(settings.ops.host)
        task = asyncio.create_task(service.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await access.close()
            await redis.aclose()

    app = FastAPI(title="streamrec operations", lifespan=lifespan)
    app.state.service = service
    access.install(app)
    reader = [Depends(access.require("ops:read"))]

    @app.get("/", response_class=HTMLResponse, dependencies=reader, summary="The live operations page.")
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/overview", response_class=ORJSONResponse, dependencies=reader, summary="Every figure the page shows, as JSON.")
    async def overview() -> ORJSONResponse:
        return ORJSONResponse(build_overview(service))

    @app.get("/api/groups", response_class=ORJSONResponse, dependencies=reader,
             summary="Every consumer group with its partitions (as `streamrec lag --json`).")
    async def groups() -> ORJSONResponse:
        return ORJSONResponse([report.as_dict() for report in service.state.reports])

    @app.post("/api/admin/model/rollback", response_class=ORJSONResponse, dependencies=[Depends(access.require("admin"))],
              summary="Serve an earlier scorer version, as `streamrec model rollback` (newer versions are retired).")
    async def rollback(request: Request, body: RollbackRequest | None = None) -> ORJSONResponse:
        # Imported here: the model registry brings torch, which the service needs only for this.
        from tritonclient.utils import InferenceServerException

        from streamrec.model.registry import VersionRejected
        from streamrec.model.rollback import roll_back

        if rolling_back.locked():
            return ORJSONResponse({"error": "a rollback is already running"}, status_code=409)
        principal = getattr(request.state, "principal", None)
        to = body.to if body else None
        async with rolling_back:
            log.warning("model rollback to %s asked by key %s", to or "the previous version",
                        principal.key_id if principal else "(keys off)")
            try:
                done = await asyncio.to_thread(roll_back, settings, to=to, say=log.info)
            except ValueError as error:  # no such version to go back to
                return ORJSONResponse({"error": str(error)}, status_code=409)
            except (VersionRejected, InferenceServerException) as error:
                return ORJSONResponse({"error": f"Triton did not take the rollback: {error}"[:500]}, status_code=502)
        return ORJSONResponse({"model": done.model, "version": done.version,
                               "announced": done.announce_error is None, "announce_error": done.announce_error})

    admin = [Depends(access.require("admin"))]

    @app.get("/api/experiments", response_class=ORJSONResponse, dependencies=reader, summary="Every experiment (as `experiments list`).")
    async def list_experiments() -> ORJSONResponse:
        return ORJSONResponse([experiment.model_dump() for experiment in await experiments.all()])

    @app.post("/api/admin/experiments", response_class=ORJSONResponse, dependencies=admin, status_code=201,
              summary="Start an experiment (as `experiments create --file`); one runs at a time.")
    async def create_experiment(request: Request, body: Experiment) -> ORJSONResponse:
        principal = getattr(request.state, "principal", None)
        try:
            created = await experiments.create(body)
        except ExperimentError as error:
            return ORJSONResponse({"error": str(error)}, status_code=409)
        log.warning("experiment %s started by key %s", created.name, principal.key_id if principal else "(keys off)")
        return ORJSONResponse(created.model_dump(), status_code=201)

    @app.post("/api/admin/experiments/{name}/stop", response_class=ORJSONResponse, dependencies=admin,
              summary="Stop an experiment (its counts stay for the report).")
    async def stop_experiment(name: str) -> ORJSONResponse:
        try:
            return ORJSONResponse((await experiments.stop(name)).model_dump())
        except ExperimentError as error:
            return ORJSONResponse({"error": str(error)}, status_code=404)

    @app.get("/api/experiments/{name}/report", response_class=ORJSONResponse, dependencies=reader,
             summary="The experiment's report (as `experiments report --json`).")
    async def experiment_report(name: str) -> ORJSONResponse:
        from streamrec.experiments.cli import finite
        from streamrec.experiments.report import build_report  # scipy: only for this route

        experiment = await experiments.get(name)
        if experiment is None:
            return ORJSONResponse({"error": f"no experiment named {name!r}"}, status_code=404)
        return ORJSONResponse(finite((await build_report(redis, experiment)).as_dict()))

    @app.get("/metrics", summary="Prometheus metrics: lag, statuses, canary, data quality, Triton readiness.")
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", summary="The service runs and has read the consumer groups at least once.")
    async def healthz() -> ORJSONResponse:
        ready = service.state.reports_at is not None
        body = {"ok": ready, "lag_error": service.state.lag_error, "sampled_at": service.state.reports_at}
        return ORJSONResponse(body, status_code=200 if ready else 503)

    return app
