"""Experiments in Redis (``xp:{name}``, indexed by ``s:experiments``), and each process's view.

The definition is a small JSON document written by ``streamrec experiments``; every recs worker
and API replica reads it from Redis and refreshes its copy every few seconds, so starting or
stopping an experiment needs no restart. At most one experiment runs at a time: two running
experiments would each take the same users, and neither could tell its effect from the other's.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as redis
from pydantic import ValidationError

from streamrec.experiments.definition import Experiment
from streamrec.store import layout

log = logging.getLogger(__name__)


class ExperimentError(ValueError):
    """A request the experiments store refuses, with why."""


class ExperimentStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    async def get(self, name: str) -> Experiment | None:
        raw = await self._redis.get(layout.experiment_key(name))
        return None if raw is None else Experiment.model_validate_json(raw)

    async def all(self) -> list[Experiment]:
        """Every experiment, oldest first; the definitions in one round trip (every process reads
        this every few seconds)."""
        names = sorted(member.decode() for member in await self._redis.smembers(layout.EXPERIMENTS_INDEX_KEY))
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.get(layout.experiment_key(name))
            found = await pipe.execute()
        return sorted((Experiment.model_validate_json(raw) for raw in found if raw is not None), key=lambda e: e.created_at)

    async def running(self) -> Experiment | None:
        return next((experiment for experiment in await self.all() if experiment.status == "running"), None)

    async def create(self, experiment: Experiment) -> Experiment:
        """Store a new running experiment; refused when the name exists or another one runs."""
        if await self.get(experiment.name) is not None:
            raise ExperimentError(f"an experiment named {experiment.name!r} exists already; choose a new name")
        if (other := await self.running()) is not None:
            raise ExperimentError(f"experiment {other.name!r} is running; stop it first (one experiment at a time)")
        created = experiment.model_copy(update={"status": "running", "version": 1, "created_at": int(time.time() * 1000)})
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(layout.experiment_key(created.name), created.model_dump_json(), nx=True)
            pipe.sadd(layout.EXPERIMENTS_INDEX_KEY, created.name)
            stored, _ = await pipe.execute()
        if not stored:
            raise ExperimentError(f"an experiment named {experiment.name!r} was created concurrently")
        return created

    async def stop(self, name: str) -> Experiment:
        experiment = await self.get(name)
        if experiment is None:
            raise ExperimentError(f"no experiment named {name!r}")
        if experiment.status == "stopped":
            return experiment
        stopped = experiment.model_copy(update={"status": "stopped", "version": experiment.version + 1,
                                                "stopped_at": int(time.time() * 1000)})
        await self._redis.set(layout.experiment_key(name), stopped.model_dump_json())
        return stopped


class RunningExperiment:
    """A process's copy of the running experiment, refreshed in the background.

    Read on every list, so it is a plain attribute; a Redis outage keeps the last copy (lists go
    on being labelled and split as before) rather than failing lists.
    """

    def __init__(self, store: ExperimentStore, *, refresh_s: float) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self.current: Experiment | None = None
        self._task: asyncio.Task | None = None

    async def refresh(self) -> None:
        try:
            self.current = await self._store.running()
        except ValidationError as error:
            log.error("the running experiment's definition cannot be read; serving without it: %s", error)
            self.current = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - Redis away: keep the copy we have
                log.warning("experiment refresh failed; keeping the copy from before", exc_info=True)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
