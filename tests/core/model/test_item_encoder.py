"""The item encoder served by the session's real Triton equals the in-process module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamrec.model import contract
from streamrec.model.artifacts import load_folder, versions
from streamrec.model.encoder_client import EncoderUnavailable, TritonEncoderClient

TEXTS = [
    "Gorilla Original Gorilla Glue, Waterproof. Industrial & Scientific > Tapes. Gorilla",
    "",
    "ピペット 10 mL 科学 実験",
    "Нитриловые перчатки",
    "🧪🔬 lab kit ✨",
    "very long title " * 400,
]


@pytest.fixture(scope="module")
def in_process(stack_settings):
    folder = stack_settings.model_repo / contract.ITEM_ENCODER / str(versions(stack_settings.model_repo / contract.ITEM_ENCODER)[-1])
    module, tokenizer, metadata = load_folder(folder)

    def encode(texts: list[str]) -> np.ndarray:
        tokens = tokenizer(texts, padding=True, truncation=True, max_length=metadata.max_length, return_tensors="pt")
        with torch.inference_mode():
            return module(tokens["input_ids"], tokens["attention_mask"]).numpy()

    return encode


async def test_served_embeddings_equal_in_process(settings, in_process):
    client = TritonEncoderClient(settings.triton.grpc_url)
    try:
        served = await client.encode(TEXTS)
    finally:
        await client.close()
    expected = np.concatenate([in_process([text]) for text in TEXTS])  # one by one: no padding effects
    assert served.shape == expected.shape
    np.testing.assert_allclose(served, expected, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)


async def test_batches_larger_than_max_batch_size_are_chunked(settings):
    client = TritonEncoderClient(settings.triton.grpc_url, batch_size=64)
    try:
        served = await client.encode([f"item {i}" for i in range(150)])
    finally:
        await client.close()
    assert served.shape[0] == 150 and np.isfinite(served).all()


async def test_unknown_model_is_a_clear_error(settings):
    client = TritonEncoderClient(settings.triton.grpc_url, model="no_such_model", timeout_s=5)
    try:
        with pytest.raises(EncoderUnavailable, match="no_such_model"):
            await client.encode(["x"])
    finally:
        await client.close()
