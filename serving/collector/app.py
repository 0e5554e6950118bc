"""The HTTP collector: ``POST /v1/events`` for web and mobile frontends.

A request carries a JSON array of events (at most ``max_batch_events`` events
and ``max_body_bytes`` bytes). Each event is validated on its own, so one bad
event never costs the good ones: valid events go to their topics, invalid ones
to ``events.dlq`` with the reason and their raw JSON, and the answer (202)
gives a status per event. A request that cannot be read as a batch at all
(invalid UTF-8, bad JSON, not an array, empty, too many events, too large) is
refused whole with 400 or 413, and its raw body goes to the DLQ too.

The answer waits until Kafka has acknowledged every record of the request,
dead letters included: a 202 means nothing sent can be lost any more, and a
503 means "retry the whole batch" (consumers deduplicate by ``event_id``).

Who may post, and how often, is :mod:`serving.access`'s job (scope ``events:write``;
publishable keys may also come as ``X-Streamrec-Key`` or ``?key=``, for ``sendBeacon``).
Settings come from :class:`streamrec.settings.CollectorSettings`; the app keeps
no module-level state, so every :func:`create_app` is independent (tests run
several side by side with their own Prometheus registries).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from confluent_kafka.admin import AdminClient
from starlette.requests import ClientDisconnect

from serving.access import KEY_HEADER, Access, Limits
from streamrec.auth.ratelimit import Rate
from streamrec.deadletter import DeadLetter
from streamrec.events import EVENT_TYPES, EventValidator, InvalidEvent, is_canary
from streamrec.kafka_admin import admin_client
from streamrec.producer import DeliveryError, DeliveryResult, Event, EventProducer
from streamrec.quality_metrics import CANARY_KIND, COLLECTOR_EVENTS
from streamrec.settings import CollectorSettings, Settings
from streamrec.topics import Topic

log = logging.getLogger(__name__)

SOURCE = "collector"
JSON = "application/json"
DUPLICATE_REASON = "duplicate event_id in batch"
ACK_GRACE_S = 1.0


class Metrics:
    """Prometheus metrics in a registry of their own, so two apps in one process never clash."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            COLLECTOR_EVENTS,  # read by the data-quality scorecard
            "Events received, by outcome (accepted, rejected, failed) and the kind of rejection (canary: the probe's).",
            ["outcome", "kind"],
            registry=self.registry,
        )
        self.requests = Counter(
            "streamrec_collector_requests", "Requests to /v1/events by HTTP status.", ["status"], registry=self.registry
        )
        self.latency = Histogram(
            "streamrec_collector_request_seconds",
            "Time to answer POST /v1/events, Kafka acknowledgements included.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )


class BatchRefused(Exception):
    """The request as a whole cannot be taken (400/413); its raw body still goes to the DLQ."""

    def __init__(self, status: int, kind: str, message: str, raw: bytes) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.raw = raw


@dataclass
class Rejected:
    index: int
    letter: DeadLetter
    kind: str


@dataclass
class CheckedBatch:
    accepted: list[tuple[int, Event]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


class Deliveries:
    """Waits for a request's Kafka acknowledgements and wakes the request once, at the last one.

    Reports arrive on the producer's poll thread. Counting them there and calling
    ``call_soon_threadsafe`` once per request (not once per event) keeps the event
    loop's wake-ups independent of the batch size.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, expected: int) -> None:
        self._loop = loop
        self._remaining = expected
        self._lock = threading.Lock()
        self._outcomes: dict[int, str | None] = {}  # slot -> delivery error, None when acknowledged
        self._timeout_s: float | None = None
        self.done: asyncio.Future[None] = loop.create_future()
        if expected == 0:
            self.done.set_result(None)

    def callback(self, slot: int) -> Callable[[DeliveryResult], None]:
        return lambda result: self.report(slot, result.error)

    def report(self, slot: int, error: str | None) -> None:
        with self._lock:
            self._outcomes[slot] = error
            self._remaining -= 1
            finished = self._remaining == 0
        if finished:
            self._loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.done.done():  # the request may have timed out already
            self.done.set_result(None)

    async def wait(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self.done), timeout_s)
        except TimeoutError:
            self._timeout_s = timeout_s

    def error(self, slot: int) -> str | None:
        """Why the record in ``slot`` is not safely in Kafka, or None when it is."""
        with self._lock:
            if slot not in self._outcomes:
                return f"not acknowledged by Kafka within {self._timeout_s:g} s" if self._timeout_s else "pending"
            error = self._outcomes[slot]
        return None if error is None else f"Kafka delivery failed: {error}"


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) once it passes ``limit`` without reading the rest.

    At most ``limit`` plus one chunk is ever held, whatever Content-Length says (a header that is
    not a number, e.g. a superscript digit that ``str.isdigit`` takes, is named, never parsed).
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            declared = request.headers.get("content-length")
            if declared is None:
                total = "unknown size, chunked"
            elif declared.isascii() and declared.isdigit():
                total = f"{int(declared):,} bytes"
            else:
                total = f"Content-Length {declared[:40]!r} is not a number"
            raise BatchRefused(
                413,
                "body_too_large",
                f"request body too large ({total}); the limit is {limit:,} bytes: split the batch",
                b"".join(chunks),
            )
    return b"".join(chunks)


def parse_batch(body: bytes, limits: CollectorSettings) -> list[Any]:
    """Decode the body into a non-empty JSON array of at most ``max_batch_events`` items."""
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        try:
            body.decode("utf-8")  # strict; orjson also rejects invalid UTF-8, so tell the two apart
        except UnicodeDecodeError as bad:
            raise BatchRefused(
                400, "invalid_utf8", f"request body is not valid UTF-8 (byte {bad.start}: {bad.reason})", body
            ) from None
        raise BatchRefused(400, "invalid_json", f"request body is not valid JSON: {error}", body) from None
    if not isinstance(items, list):
        raise BatchRefused(
            400, "not_array", f"request body must be a JSON array of events, got a JSON {_json_type(items)}", body
        )
    if not items:
        raise BatchRefused(400, "empty_batch", "empty batch: send a JSON array with at least one event", body)
    if len(items) > limits.max_batch_events:
        raise BatchRefused(
            413,
            "batch_too_large",
            f"batch has {len(items):,} events; the limit is {limits.max_batch_events:,} per request: split the batch",
            body,
        )
    return items


def _json_type(value: object) -> str:
    return {dict: "object", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


def check_events(items: list[Any], validator: EventValidator, max_raw_bytes: int) -> CheckedBatch:
    """Validate each event on its own; later copies of an ``event_id`` in the batch are rejected."""
    batch = CheckedBatch()
    first_seen: dict[uuid.UUID, int] = {}
    for index, raw in enumerate(items):
        try:
            event = validator.parse(raw)
        except InvalidEvent as error:
            letter = _letter(raw, index, error.reason, error.errors, _raw_event_id(raw), max_raw_bytes)
            batch.rejected.append(Rejected(index, letter, _kind(raw, error)))
            continue
        first = first_seen.setdefault(event.event_id, index)
        if first != index:
            errors = [{"loc": "event_id", "msg": f"same event_id as event {first}", "type": "duplicate_event_id"}]
            letter = _letter(raw, index, DUPLICATE_REASON, errors, str(event.event_id), max_raw_bytes)
            batch.rejected.append(Rejected(index, letter, "duplicate_event_id"))
            continue
        batch.accepted.append((index, event))
    return batch


def _letter(
    raw: object, index: int, reason: str, errors: list[dict[str, str]], event_id: str | None, max_raw_bytes: int
) -> DeadLetter:
    return DeadLetter.wrap(
        orjson.dumps(raw),
        reason=reason,
        source=SOURCE,
        max_raw_bytes=max_raw_bytes,
        errors=errors,
        event_id=event_id,
        index=index,
    )


def _raw_event_id(raw: object) -> str | None:
    """The sender's event_id, if it looks like one, so the DLQ record can be found by it."""
    event_id = raw.get("event_id") if isinstance(raw, dict) else None
    return event_id if isinstance(event_id, str) and 0 < len(event_id) <= 256 else None


def _kind(raw: object, error: InvalidEvent) -> str:
    """A short label for metrics: pydantic's error type, or why the validator refused it."""
    if not isinstance(raw, dict):
        return "not_object"
    event_type = raw.get("type")
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        return "unknown_type"
    return error.errors[0]["type"] if error.errors else "invalid"


class Collector:
    """Handles the routes; the Kafka producer is attached while the app runs (see :meth:`running`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limits = settings.collector
        self._raw_max_bytes = settings.deadletters.raw_max_bytes
        self.validator = EventValidator(max_future_skew_s=settings.events.max_future_skew_s)
        self.metrics = Metrics()
        auth = settings.auth
        self.access = Access(
            settings,
            service="collector",
            registry=self.metrics.registry,
            limits=Limits(key=Rate(auth.collector_key_rate, auth.collector_key_burst),
                          address=Rate(auth.collector_address_rate, auth.collector_address_burst)),
            keys_in_url=True,
        )
        self._producer: EventProducer | None = None
        self._admin: AdminClient | None = None  # for health checks
        # librdkafka reports a timed-out record (message.timeout.ms = delivery_timeout_s) a little
        # after the deadline; waiting a grace period longer lets its verdict, not a race, decide.
        self._ack_wait_s = self.limits.delivery_timeout_s + ACK_GRACE_S

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Own the producer for the app's lifetime; flush what is queued at shutdown."""
        self.access.announce(self.limits.host)
        self._producer = EventProducer.from_settings(
            self.settings,
            poll_thread=True,
            client="collector",
            # librdkafka gives up on a record when the request does, so a 503 means "not written"
            # rather than "maybe written later" (and nothing lingers in the queue after shutdown).
            extra_config={"message.timeout.ms": int(self.limits.delivery_timeout_s * 1000)},
        )
        self._admin = admin_client(self.settings.kafka, client="collector-health")
        try:
            yield
        finally:
            producer, self._producer, self._admin = self._producer, None, None
            await self.access.close()
            try:
                await asyncio.to_thread(producer.close, self.limits.delivery_timeout_s)
            except DeliveryError as error:  # already answered 503 for these; just leave a trace
                log.warning("collector producer closed with undelivered records: %s", error)

    @property
    def producer(self) -> EventProducer:
        if self._producer is None:
            raise RuntimeError("the collector is not running (app lifespan not started)")
        return self._producer

    # -- routes ----------------------------------------------------------------------------

    async def ingest(self, request: Request) -> Response:
        started = time.perf_counter()
        response = await self._ingest(request)
        self.metrics.latency.observe(time.perf_counter() - started)
        self.metrics.requests.labels(str(response.status_code)).inc()
        return response

    async def healthz(self) -> Response:
        """Healthy while the producer runs and the broker answers a metadata request."""
        producer, admin = self._producer, self._admin
        if producer is None or admin is None:
            return json_response(503, {"status": "down", "error": "producer not running"})
        try:
            await asyncio.to_thread(admin.list_topics, Topic.DLQ.value, timeout=2.0)
        except Exception as error:  # noqa: BLE001 - any failure means "not healthy", with its message
            return json_response(503, {"status": "down", "error": f"Kafka not reachable: {error}"})
        totals = producer.totals()
        return json_response(
            200,
            {"status": "ok", "delivered": totals.delivered, "failed": totals.failed, "pending": totals.pending},
        )

    async def metrics_page(self) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- ingest steps ----------------------------------------------------------------------

    async def _ingest(self, request: Request) -> Response:
        try:
            items = parse_batch(await read_body(request, self.limits.max_body_bytes), self.limits)
        except BatchRefused as refused:
            return await self._refuse(refused)
        except ClientDisconnect:
            return json_response(400, {"error": "client disconnected before sending the whole body"})
        batch = check_events(items, self.validator, self._raw_max_bytes)
        return await self._deliver(batch)

    async def _refuse(self, refused: BatchRefused) -> Response:
        """Dead-letter the whole body, then answer 400/413 (503 if Kafka did not take the record)."""
        letter = DeadLetter.wrap(
            refused.raw,
            reason=refused.message,
            source=SOURCE,
            max_raw_bytes=self._raw_max_bytes,
            errors=[{"loc": "(body)", "msg": refused.message, "type": refused.kind}],
        )
        deliveries = Deliveries(asyncio.get_running_loop(), 1)
        self._queue(self.producer.produce_dead_letter, letter, deliveries, 0)
        await deliveries.wait(self._ack_wait_s)
        self.metrics.events.labels("rejected", refused.kind).inc()
        if deliveries.error(0):
            return json_response(
                503,
                {"error": f"{refused.message}; the dead-letter queue did not take the body either, retry later"},
                headers={"Retry-After": "1"},
            )
        return json_response(refused.status, {"error": refused.message})

    async def _deliver(self, batch: CheckedBatch) -> Response:
        """Produce valid events and dead letters, wait for every ack, answer per event."""
        deliveries = Deliveries(asyncio.get_running_loop(), len(batch.accepted) + len(batch.rejected))
        for slot, (_, event) in enumerate(batch.accepted):
            self._queue(self.producer.produce, event, deliveries, slot)
        for slot, rejected in enumerate(batch.rejected, start=len(batch.accepted)):
            self._queue(self.producer.produce_dead_letter, rejected.letter, deliveries, slot)
        await deliveries.wait(self._ack_wait_s)
        return self._answer(batch, deliveries)

    def _answer(self, batch: CheckedBatch, deliveries: Deliveries) -> Response:
        """202 with a status per event, or 503 when any record (event or dead letter) is not in Kafka."""
        results: list[dict[str, Any]] = []
        for slot, (index, event) in enumerate(batch.accepted):
            result = {"index": index, "event_id": str(event.event_id), "status": "accepted"}
            if error := deliveries.error(slot):
                result.update(status="failed", reason=error)
            results.append(result)
        for rejected in batch.rejected:
            letter = rejected.letter
            results.append(
                {"index": rejected.index, "event_id": letter.event_id, "status": "rejected", "reason": letter.reason}
            )
            self.metrics.events.labels("rejected", rejected.kind).inc()
        results.sort(key=lambda result: result["index"])

        failed = sum(result["status"] == "failed" for result in results)
        accepted = len(batch.accepted) - failed
        # The end-to-end probe's events apart, so they stay out of the data-quality figures.
        canary = sum(not deliveries.error(slot) and is_canary(getattr(event, "user_id", ""))
                     for slot, (_, event) in enumerate(batch.accepted))
        self.metrics.events.labels("accepted", "ok").inc(accepted - canary)
        if canary:
            self.metrics.events.labels("accepted", CANARY_KIND).inc(canary)
        self.metrics.events.labels("failed", "delivery").inc(failed)
        body: dict[str, Any] = {"accepted": accepted, "rejected": len(batch.rejected), "results": results}
        letter_slots = range(len(batch.accepted), len(batch.accepted) + len(batch.rejected))
        if failed or any(deliveries.error(slot) for slot in letter_slots):
            error = "Kafka did not acknowledge every record; retry the whole batch (duplicates are dropped by event_id)"
            return json_response(503, {"error": error, "failed": failed, **body}, headers={"Retry-After": "1"})
        return json_response(202, body)

    @staticmethod
    def _queue(send: Callable[..., object], record: object, deliveries: Deliveries, slot: int) -> None:
        """Queue one record; a record librdkafka refuses outright counts as failed, not as pending."""
        try:
            send(record, on_delivery=deliveries.callback(slot))
        except Exception as error:  # noqa: BLE001 - e.g. KafkaException for a message over the size limit
            deliveries.report(slot, str(error))


def create_app(settings: Settings) -> FastAPI:
    """The collector as an ASGI app; its producer starts and stops with the app's lifespan."""
    collector = Collector(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with collector.running():
            yield

    app = FastAPI(title="streamrec collector", lifespan=lifespan)
    app.state.collector = collector
    collector.access.install(app)
    if settings.collector.cors_origins:
        # Browsers may send events only from the shop's own pages: an exact allow-list, never "*",
        # and no cookies (events carry their ids; credentials would let other sites ride a session).
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.collector.cors_origins),
            allow_methods=["POST"],
            allow_headers=["Content-Type", "Authorization", KEY_HEADER],
            expose_headers=["Retry-After"],
            allow_credentials=False,
            max_age=settings.collector.cors_max_age_s,
        )
    app.add_api_route(
        "/v1/events",
        collector.ingest,
        methods=["POST"],
        status_code=202,
        dependencies=[Depends(collector.access.require("events:write"))],
        summary="Send a JSON array of events (at most max_batch_events, max_body_bytes).",
    )
    app.add_api_route("/healthz", collector.healthz, methods=["GET"], summary="Producer running and Kafka reachable.")
    app.add_api_route("/metrics", collector.metrics_page, methods=["GET"], summary="Prometheus metrics.")
    return app
