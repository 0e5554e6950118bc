"""Async gRPC client for ``bert_scorer`` (the sequence model) on Triton, built for many users at once.

Callers ask for one user's answer (``await client.rank(history, types, k, candidates)``: the top
``k`` over the catalog and the scores of the user's candidates). Calls that arrive within
``max_delay_s`` of each other go out as one request of up to ``max_batch`` users, with up to
``max_in_flight`` requests running at once, so Triton's dynamic batcher sees few, large
batches. Every request has a deadline; a circuit breaker (the one the text scorer's client
uses) makes calls fail at once with :class:`ScorerUnavailable` while Triton keeps failing, and
lets one trial through after ``breaker_reset_s``. The answers equal
:meth:`streamrec.model.served_sequence.ServedSequence.rank` for the served version.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient

from serving.engine.scorer_client import CircuitBreaker, ScorerUnavailable
from streamrec.model import contract
from streamrec.model.sequence_request import sequence_inputs
from streamrec.settings import Settings


@dataclass
class SequenceAnswer:
    top_items: list[str]
    top_scores: np.ndarray
    candidate_scores: np.ndarray
    version: str | None = None  # the model version Triton answered with


@dataclass
class _Call:
    history: list[str]
    types: list[str]
    k: int
    candidates: list[str]
    future: asyncio.Future
    version: str = ""  # "" is the version Triton's policy serves (the newest)


class TritonSequenceClient:
    def __init__(self, url: str, *, model: str = contract.BERT_SCORER, max_batch: int = 64, max_delay_s: float = 0.002,
                 max_in_flight: int = 4, timeout_s: float = 2.0, breaker_failures: int = 3,
                 breaker_reset_s: float = 2.0) -> None:
        self._client = grpcclient.InferenceServerClient(url=url)
        self.model = model
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._timeout_s = timeout_s
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self.breaker = CircuitBreaker(breaker_failures, breaker_reset_s)
        self.served_version: str | None = None
        self.requests = 0
        self._pending: list[_Call] = []
        self._flusher: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    def from_settings(cls, settings: Settings, **options) -> TritonSequenceClient:
        assert settings.triton.grpc_url is not None
        return cls(settings.triton.grpc_url, **options)

    async def rank(self, history: list[str], types: list[str], k: int, candidates: list[str],
                   version: str | None = None) -> SequenceAnswer:
        """``version`` pins a model version (an experiment's variant); Triton must have it loaded
        (``version_policy``), else the call fails like any other and the list degrades."""
        if not self.breaker.allow():
            raise ScorerUnavailable(f"{self.model}: circuit open after repeated failures")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Call(list(history), list(types), int(k), list(candidates), future, version or ""))
        if len(self._pending) >= self._max_batch:
            self._flush()
        elif self._flusher is None:
            self._flusher = asyncio.get_running_loop().call_later(self._max_delay_s, self._flush)  # type: ignore[assignment]
        return await future

    def _flush(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()  # type: ignore[attr-defined]
            self._flusher = None
        by_version: dict[str, list[_Call]] = {}
        for call in self._pending:
            by_version.setdefault(call.version, []).append(call)
        self._pending = []
        for version, calls in by_version.items():  # one request names one version
            for start in range(0, len(calls), self._max_batch):
                task = asyncio.ensure_future(self._send(calls[start : start + self._max_batch], version))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send(self, calls: list[_Call], version: str = "") -> None:
        try:
            async with self._in_flight:
                self.requests += 1
                inputs = sequence_inputs([c.history for c in calls], k=[c.k for c in calls],
                                         types=[c.types for c in calls], candidates=[c.candidates for c in calls],
                                         module=grpcclient)
                result = await self._client.infer(self.model, inputs, model_version=version, client_timeout=self._timeout_s)
        except Exception as error:  # noqa: BLE001 - every failure fails the calls; the breaker counts it
            self.breaker.failure()
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(ScorerUnavailable(f"{self.model}: {str(error).splitlines()[0][:200]}"))
            return
        self.breaker.success()
        response = result.get_response()
        if not version:  # the version the policy serves: what unpinned lists are labelled with
            self.served_version = response.model_version or self.served_version
        items = result.as_numpy(contract.TOPK_ITEMS)
        top = result.as_numpy(contract.TOPK_SCORES)
        scores = result.as_numpy(contract.CANDIDATE_SCORES)
        for row, call in enumerate(calls):
            if call.future.done():
                continue
            ids = [value.decode("utf-8") for value in items[row][: call.k]]
            kept = [n for n, item in enumerate(ids) if item]
            call.future.set_result(SequenceAnswer(
                top_items=[ids[n] for n in kept], top_scores=top[row][kept].astype(np.float32),
                candidate_scores=scores[row][: len(call.candidates)].astype(np.float32),
                version=response.model_version or None,
            ))

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()  # type: ignore[attr-defined]
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
        await self._client.close()
