"""Async gRPC client for the BERT scorers on Triton, built for many users at once.

Callers ask for one user's candidate list (``await client.score(context, items)``). Lists that
arrive within ``max_delay_s`` of each other are coalesced into as few requests as fit in the
model's ``max_batch_size`` (a long list is split across requests and put back together), and
up to ``max_in_flight`` requests run concurrently, so Triton's dynamic batcher sees large
batches instead of one small request per user.

Failure handling, so a slow or broken Triton cannot stall the recommendation loop:

* every request has a deadline (``timeout_s``);
* transient errors (unavailable, deadline exceeded, resource exhausted) are retried
  ``retries`` times with exponential back-off; bad requests are not retried;
* a circuit breaker opens after ``breaker_failures`` consecutive failed requests: while open,
  calls fail at once with :class:`ScorerUnavailable` (callers fall back, e.g. to the
  retrieval order); after ``breaker_reset_s`` one trial request is let through (half-open)
  and its outcome closes or re-opens the breaker.

Scores are the model's logits, equal to :class:`streamrec.model.inference.InProcessScorer`'s.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from streamrec.model import contract
from streamrec.settings import Settings

RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "UNKNOWN")


class ScorerUnavailable(RuntimeError):
    """The scores could not be computed (Triton down, too slow, circuit open or the model not ready)."""


@dataclass
class ClientStats:
    calls: int = 0
    pairs: int = 0
    requests: int = 0
    retries: int = 0
    failed_requests: int = 0
    rejected_open: int = 0


@dataclass
class CircuitBreaker:
    failures_to_open: int = 5
    reset_s: float = 10.0
    state: Literal["closed", "open", "half_open"] = "closed"
    failures: int = 0
    opened_at: float = 0.0
    _trial_running: bool = field(default=False, repr=False)

    def allow(self) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open" and time.monotonic() - self.opened_at >= self.reset_s:
            self.state = "half_open"
        if self.state == "half_open" and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def success(self) -> None:
        self.state, self.failures, self._trial_running = "closed", 0, False

    def failure(self) -> None:
        self.failures += 1
        self._trial_running = False
        if self.state == "half_open" or self.failures >= self.failures_to_open:
            self.state, self.opened_at = "open", time.monotonic()


@dataclass
class _Call:
    context: str
    items: list[str]
    future: asyncio.Future
    scores: np.ndarray | None = None
    missing: int = 0  # chunks still outstanding


@dataclass
class _Chunk:
    call: _Call
    start: int
    stop: int


class TritonScorerClient:
    """Scores candidate lists on Triton (``cross_encoder_student`` on CPU, ``cross_encoder`` on GPU)."""

    def __init__(
        self,
        url: str,
        *,
        model: str = contract.CROSS_ENCODER_STUDENT,
        max_batch: int | None = None,
        max_delay_s: float = 0.002,
        max_in_flight: int = 4,
        timeout_s: float = 2.0,
        retries: int = 2,
        backoff_s: float = 0.05,
        breaker_failures: int = 5,
        breaker_reset_s: float = 10.0,
    ) -> None:
        """``max_batch`` defaults to the model's ``max_batch_size`` (asked from Triton once)."""
        self._client = grpcclient.InferenceServerClient(url=url)
        self.model = model
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self.breaker = CircuitBreaker(breaker_failures, breaker_reset_s)
        self.stats = ClientStats()
        self.served_version: str | None = None  # the model version that answered last
        self._pending: list[_Call] = []
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, **options) -> TritonScorerClient:
        assert settings.triton.grpc_url is not None
        return cls(settings.triton.grpc_url, **options)

    async def score(self, context: str, items: list[str]) -> np.ndarray:
        """One relevance logit per item (float32), in the order given."""
        if self._closed:
            raise ScorerUnavailable("client is closed")
        self.stats.calls += 1
        if not items:
            return np.zeros(0, np.float32)
        if not self.breaker.allow():
            self.stats.rejected_open += 1
            raise ScorerUnavailable(f"{self.model}: circuit open after {self.breaker.failures} failed requests")
        call = _Call(context, list(items), asyncio.get_running_loop().create_future())
        self._pending.append(call)
        self._wakeup.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        return await call.future

    async def score_many(self, lists: list[tuple[str, list[str]]]) -> list[np.ndarray]:
        """Several users at once (coalesced like concurrent ``score`` calls)."""
        return list(await asyncio.gather(*(self.score(context, items) for context, items in lists)))

    async def close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
        for task in list(self._tasks):
            task.cancel()
        for call in self._pending:
            if not call.future.done():
                call.future.set_exception(ScorerUnavailable("client closed"))
        await self._client.close()

    # -- batching --------------------------------------------------------------------------

    async def _limit(self) -> int:
        if self._max_batch is None:
            try:
                config = await self._client.get_model_config(self.model, as_json=True, client_timeout=self._timeout_s)
                self._max_batch = int(config["config"].get("max_batch_size", 0)) or 64
            except Exception:  # noqa: BLE001 - the request itself will report the real problem
                return 64
        return self._max_batch

    async def _run(self) -> None:
        while not self._closed:
            await self._wakeup.wait()
            self._wakeup.clear()
            limit = await self._limit()
            deadline = time.monotonic() + self._max_delay_s
            while sum(len(call.items) for call in self._pending) < limit and time.monotonic() < deadline:
                await asyncio.sleep(min(0.0005, max(0.0, deadline - time.monotonic())))
            calls, self._pending = self._pending, []
            if not calls:
                continue
            for request in self._pack(calls, limit):
                await self._in_flight.acquire()
                task = asyncio.create_task(self._send(request))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _pack(calls: list[_Call], limit: int) -> list[list[_Chunk]]:
        """Fill requests of at most ``limit`` pairs, splitting only lists that do not fit."""
        requests: list[list[_Chunk]] = []
        current: list[_Chunk] = []
        room = limit
        for call in calls:
            call.scores = np.empty(len(call.items), np.float32)
            start = 0
            while start < len(call.items):
                if room == 0:
                    requests.append(current)
                    current, room = [], limit
                stop = min(len(call.items), start + room)
                current.append(_Chunk(call, start, stop))
                call.missing += 1
                room -= stop - start
                start = stop
        if current:
            requests.append(current)
        return requests

    async def _send(self, chunks: list[_Chunk]) -> None:
        try:
            contexts = [chunk.call.context for chunk in chunks for _ in range(chunk.stop - chunk.start)]
            items = [item for chunk in chunks for item in chunk.call.items[chunk.start : chunk.stop]]
            scores = await self._infer(contexts, items)
        except Exception as error:  # noqa: BLE001 - every waiting caller must hear about it
            failure = error if isinstance(error, ScorerUnavailable) else ScorerUnavailable(f"{self.model}: {error}")
            for chunk in chunks:
                if not chunk.call.future.done():
                    chunk.call.future.set_exception(failure)
        else:
            offset = 0
            for chunk in chunks:
                size = chunk.stop - chunk.start
                assert chunk.call.scores is not None
                chunk.call.scores[chunk.start : chunk.stop] = scores[offset : offset + size]
                offset += size
                chunk.call.missing -= 1
                if chunk.call.missing == 0 and not chunk.call.future.done():
                    chunk.call.future.set_result(chunk.call.scores)
        finally:
            self._in_flight.release()

    # -- one request with deadline, retries and the breaker ------------------------------

    async def _infer(self, contexts: list[str], items: list[str]) -> np.ndarray:
        inputs = []
        for name, texts in ((contract.SCORER_INPUT_CONTEXT, contexts), (contract.SCORER_INPUT_ITEM, items)):
            payload = np.array([[text.encode("utf-8")] for text in texts], dtype=np.object_)
            tensor = grpcclient.InferInput(name, list(payload.shape), "BYTES")
            tensor.set_data_from_numpy(payload)
            inputs.append(tensor)
        outputs = [grpcclient.InferRequestedOutput(contract.SCORER_OUTPUT)]
        attempt = 0
        while True:
            self.stats.requests += 1
            try:
                result = await self._client.infer(self.model, inputs, outputs=outputs, client_timeout=self._timeout_s)
            except InferenceServerException as error:
                if attempt < self._retries and _retryable(error):
                    attempt += 1
                    self.stats.retries += 1
                    await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
                    continue
                self.stats.failed_requests += 1
                self.breaker.failure()
                raise ScorerUnavailable(f"{self.model}: {error}") from error
            self.breaker.success()
            self.stats.pairs += len(items)
            self.served_version = result.get_response().model_version or self.served_version
            return result.as_numpy(contract.SCORER_OUTPUT).reshape(-1).astype(np.float32)


def _retryable(error: InferenceServerException) -> bool:
    status = str(error.status() or "")
    return any(code in status for code in RETRYABLE)
