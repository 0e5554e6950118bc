"""The async scorer client against the session's real Triton: equal scores, coalescing, and how it
fails (deadlines, retries, circuit breaker)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serving.engine.scorer_client import ScorerUnavailable, TritonScorerClient
from streamrec.model import contract
from streamrec.model.artifacts import load_folder, versions
from streamrec.model.inference import InProcessScorer
from streamrec.stack.process import free_port

USERS = [
    (f"user {u}: recent titles ; nitrile gloves ; ピペット ; 🧪 kit {u}", [f"item {u}-{i} Industrial & Scientific {'x' * (i % 7)}" for i in range(20 + u)])
    for u in range(12)
]


def in_process(stack_settings, model: str, precision: str = "fp32") -> InProcessScorer:
    """The model in this process; fp32 by default, as Triton's CPU config of ``cross_encoder`` runs it."""
    folder = stack_settings.model_repo / model / str(versions(stack_settings.model_repo / model)[-1])
    module, tokenizer, metadata = load_folder(folder)
    return InProcessScorer(module, tokenizer, max_length=metadata.max_length, precision=precision)  # type: ignore[arg-type]


async def test_many_users_are_coalesced_and_score_like_in_process(settings, stack_settings):
    reference = in_process(stack_settings, contract.CROSS_ENCODER)
    client = TritonScorerClient.from_settings(settings, model=contract.CROSS_ENCODER, max_delay_s=0.02)
    try:
        results = await asyncio.gather(*(client.score(context, items) for context, items in USERS))
    finally:
        await client.close()
    pairs = sum(len(items) for _, items in USERS)
    assert client.stats.requests <= -(-pairs // 128) + 1, client.stats  # a few full requests, not one per user
    for (context, items), scores in zip(USERS, results):
        np.testing.assert_allclose(scores, await reference.score(context, items), atol=1e-4, rtol=0)


async def test_a_list_longer_than_max_batch_is_split_and_reassembled(settings, stack_settings):
    reference = in_process(stack_settings, contract.CROSS_ENCODER)
    items = [f"candidate {i} {'lab ' * (i % 5)}" for i in range(300)]
    client = TritonScorerClient.from_settings(settings, model=contract.CROSS_ENCODER)
    try:
        scores = await client.score("recent: glue ; gloves", items)
        assert await client.score("anything", []) is not None
    finally:
        await client.close()
    assert client.stats.requests == 3  # 128 + 128 + 44
    np.testing.assert_allclose(scores, await reference.score("recent: glue ; gloves", items), atol=1e-4, rtol=0)


async def test_student_scores_like_in_process(settings, stack_settings):
    """The student runs in bf16 on CPU; scored in one batch with other users it stays within bf16 noise."""
    reference = in_process(stack_settings, contract.CROSS_ENCODER_STUDENT, precision="bf16")
    client = TritonScorerClient.from_settings(settings)  # the CPU default model
    assert client.model == contract.CROSS_ENCODER_STUDENT
    try:
        results = await client.score_many(USERS[:4])
    finally:
        await client.close()
    for (context, items), scores in zip(USERS[:4], results):
        np.testing.assert_allclose(scores, await reference.score(context, items), atol=2e-2, rtol=0)


async def test_unreachable_triton_is_retried_then_the_circuit_opens():
    client = TritonScorerClient(
        f"127.0.0.1:{free_port()}", max_batch=64, timeout_s=1.0, retries=2, backoff_s=0.01,
        breaker_failures=2, breaker_reset_s=0.5,
    )
    try:
        with pytest.raises(ScorerUnavailable):
            await client.score("context", ["item"])
        assert client.stats.requests == 3 and client.stats.retries == 2  # one try, two retries
        with pytest.raises(ScorerUnavailable):
            await client.score("context", ["item"])
        assert client.breaker.state == "open"
        sent = client.stats.requests
        with pytest.raises(ScorerUnavailable, match="circuit open"):
            await client.score("context", ["item"])
        assert client.stats.requests == sent  # failed at once, nothing sent
        await asyncio.sleep(0.6)
        with pytest.raises(ScorerUnavailable):  # the half-open trial fails and opens it again
            await client.score("context", ["item"])
        assert client.breaker.state == "open" and client.stats.requests == sent + 3
    finally:
        await client.close()


async def test_the_circuit_closes_after_a_successful_trial(settings):
    client = TritonScorerClient.from_settings(settings, breaker_failures=1, breaker_reset_s=0.2)
    try:
        client.breaker.failure()
        assert client.breaker.state == "open"
        with pytest.raises(ScorerUnavailable, match="circuit open"):
            await client.score("context", ["item"])
        await asyncio.sleep(0.3)
        scores = await client.score("context", ["item", "other item"])
        assert scores.shape == (2,) and client.breaker.state == "closed"
    finally:
        await client.close()


async def test_a_deadline_too_short_fails_cleanly(settings):
    client = TritonScorerClient.from_settings(settings, timeout_s=1e-4, retries=1, backoff_s=0.0, max_batch=64)
    try:
        with pytest.raises(ScorerUnavailable, match="(?i)deadline"):
            await client.score("context", [f"item {i}" for i in range(50)])
    finally:
        await client.close()
    assert client.stats.retries == 1
