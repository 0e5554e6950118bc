"""The operations service's loops: lag samples, scrapes of every process, the canary, Triton's models.

Each loop keeps the newest state in ``OpsState``; ``/metrics`` and the page read that state and
never wait on Kafka or another process. Blocking Kafka calls run in threads so the HTTP side
stays responsive while a broker is slow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import httpx

from streamrec.data_quality import NotStreamsMetrics, Scorecard, scorecard_from_metrics
from streamrec.exposition import MetricSamples
from streamrec.lag import GroupReport, LagMonitor, LagReader, monitor_for, thresholds_for
from streamrec.settings import Settings
from streamrec.topics import INTERACTION_TOPICS, Topic
from serving.ops.canary import Canary, CanaryResult
from serving.ops.metrics import OpsMetrics
from serving.ops.scrape import Scrape, Target, scrape
from serving.ops.tail import TopicTail

log = logging.getLogger(__name__)

PAGE_TOPICS = [*(topic.value for topic in INTERACTION_TOPICS), Topic.PROFILES_UPDATED.value, Topic.RECOMMENDATIONS.value]


@dataclass
class OpsState:
    """What the loops last saw; read by the page and the exporter."""

    reports: list[GroupReport] = field(default_factory=list)
    reports_at: float | None = None
    lag_error: str | None = None
    log_ends: deque[tuple[float, dict[str, int]]] = field(default_factory=lambda: deque(maxlen=32))  # topic -> sum of log ends
    canary: deque[CanaryResult] = field(default_factory=lambda: deque(maxlen=240))
    triton: list[dict] = field(default_factory=list)
    triton_error: str | None = None
    scorecard: Scorecard | None = None


class OpsService:
    def __init__(self, settings: Settings) -> None:
        ops = settings.ops
        self.settings = settings
        self.thresholds = thresholds_for(ops)
        self.metrics = OpsMetrics(max_groups=ops.max_groups, partition_metrics=ops.partition_metrics)
        self.state = OpsState()
        self.targets = {
            job: Target(job, url)
            for job, url in (
                ("collector", f"{ops.collector_url}/metrics"),
                ("streams", ops.streams_metrics_url),
                ("recs", ops.recs_metrics_url),
                ("api", f"{ops.api_url}/metrics"),
                ("trainer", ops.trainer_metrics_url),
                ("triton", ops.triton_metrics_url),
            )
        }
        self._reader: LagReader | None = None
        self._monitor: LagMonitor | None = None
        canary_key = ops.canary_key or settings.auth.bootstrap_admin_key
        self.canary = (Canary(settings.kafka, ops.collector_url, ops.canary_timeout_s, on_unreadable=self._unreadable,
                              key=canary_key.get_secret_value() if canary_key else None)
                       if ops.canary_interval_s > 0 else None)
        self.tail = TopicTail(settings.kafka, on_unreadable=self._unreadable)
        self._client: httpx.AsyncClient | None = None

    def _unreadable(self, topic: str, reason: str) -> None:
        """Counts a record a tail could not read (the tail logs why)."""
        self.metrics.unreadable.labels(topic).inc()

    async def run(self) -> None:
        """All loops until cancelled."""
        self._client = httpx.AsyncClient()
        self.tail.start()
        if self.canary is not None:
            self.canary.start()
        loops = [self._lag_loop(), self._scrape_loop(), self._triton_loop()]
        if self.canary is not None:
            loops.append(self._canary_loop())
        try:
            await asyncio.gather(*loops)
        finally:
            await self._client.aclose()
            self.tail.stop()
            if self.canary is not None:
                self.canary.stop()
            if self._reader is not None:
                self._reader.close()

    async def _every(self, interval_s: float, step) -> None:
        while True:
            started = time.monotonic()
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one failed round must not end the loop
                log.exception("operations loop step failed")
            await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))

    async def _lag_loop(self) -> None:
        await self._every(self.settings.ops.interval_s, self.sample_lag)

    async def sample_lag(self) -> None:
        started = time.monotonic()
        try:
            if self._monitor is None:
                self._reader = LagReader(self.settings.kafka, timeout_s=min(10.0, self.settings.ops.interval_s * 2))
                self._monitor = monitor_for(self._reader, self.settings.ops)
            reports = await asyncio.to_thread(self._monitor.sample)
        except Exception as error:  # noqa: BLE001 - Kafka away: say so on the page, keep the last figures
            self.state.lag_error = f"{type(error).__name__}: {error}"[:300]
            return
        self.metrics.sample_seconds.observe(time.monotonic() - started)
        self.state.reports, self.state.reports_at, self.state.lag_error = reports, time.time(), None
        try:  # the page's throughput per topic, including topics no group here consumes (recommendations)
            self.state.log_ends.append((time.time(), await asyncio.to_thread(self._reader.log_ends, PAGE_TOPICS)))
        except Exception as error:  # noqa: BLE001 - the lag figures above still stand
            self.state.lag_error = f"log ends: {type(error).__name__}: {error}"[:300]
        self.metrics.observe_lag(reports)

    async def _scrape_loop(self) -> None:
        await self._every(self.settings.ops.interval_s, self.scrape_all)

    async def scrape_all(self) -> None:
        assert self._client is not None
        results = await asyncio.gather(*(scrape(self._client, target, 3.0) for target in self.targets.values()))
        for target, result in zip(self.targets.values(), results):
            self.metrics.target_up.labels(target.job).set(1.0 if result.up else 0.0)
        streams, collector = self.targets["streams"].latest, self.targets["collector"].latest
        if streams is not None and streams.up:
            try:
                self.state.scorecard = scorecard_from_metrics(
                    streams.text, collector.text if collector is not None and collector.up else None, self.settings.data_quality
                )
            except NotStreamsMetrics as error:  # the URL answers, but not with a streams worker's metrics
                self.targets["streams"].history.append(Scrape(at=streams.at, up=False, samples=MetricSamples(""), error=str(error)))
                self.metrics.target_up.labels("streams").set(0.0)
                return
            self.metrics.observe_scorecard(self.state.scorecard)

    async def _triton_loop(self) -> None:
        await self._every(max(self.settings.ops.interval_s, 5.0), self.read_triton)

    async def read_triton(self) -> None:
        assert self._client is not None
        base = f"http://{self.settings.triton.http_url}"
        try:
            response = await self._client.post(f"{base}/v2/repository/index", json={}, timeout=3.0)
            response.raise_for_status()
            models: dict[str, dict] = {}
            for entry in response.json():
                name = entry["name"]
                if name.startswith("."):
                    continue  # the repository's staging folder (versions being written), never a model
                model = models.setdefault(name, {"name": name, "version": None, "state": entry.get("state", "UNAVAILABLE"),
                                                 "ready": False, "reason": entry.get("reason", "")})
                if entry.get("state") == "READY" and entry.get("version"):
                    model["version"] = max(model["version"] or 0, int(entry["version"]))
                    model["state"] = "READY"
            for model in models.values():
                ready = await self._client.get(f"{base}/v2/models/{model['name']}/ready", timeout=3.0)
                model["ready"] = ready.status_code == 200
        except (httpx.HTTPError, ValueError, KeyError) as error:
            self.state.triton_error = f"{type(error).__name__}: {error}"[:300]
            self.metrics.observe_triton([])
            self.state.triton = []
            return
        self.state.triton, self.state.triton_error = sorted(models.values(), key=lambda m: m["name"]), None
        self.metrics.observe_triton(self.state.triton)

    async def _canary_loop(self) -> None:
        await self._every(self.settings.ops.canary_interval_s, self.probe_canary)

    async def probe_canary(self) -> CanaryResult:
        assert self.canary is not None and self._client is not None
        result = await self.canary.probe(self._client)
        self.state.canary.append(result)
        if result.ok and result.seconds is not None:
            self.metrics.canary_seconds.observe(result.seconds)
            self.metrics.canary_last_success.set(result.at)
        else:
            self.metrics.canary_failures.inc()
        return result
