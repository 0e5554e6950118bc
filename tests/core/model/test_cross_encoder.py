"""The scorers served by the session's real Triton: equal to the in-process module, at the edges
of the input space and of the batch size, and safe against broken versions."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from safetensors.torch import load_file, save_file

from streamrec.model import contract
from streamrec.model.artifacts import WEIGHTS, load_folder, versions
from streamrec.model.inference import CachedTokenizer, InProcessScorer

MODELS = list(contract.CROSS_ENCODERS)
CONTEXTS = [
    "Gorilla Original Gorilla Glue ; Nitrile gloves, 100 pack",
    "",
    "ピペット 10 mL 科学 実験",
    "Нитриловые перчатки ; 手袋",
    "🧪🔬 lab kit ✨",
    "very long context " * 300,
]
ITEMS = [
    "Gorilla Original Gorilla Glue, Waterproof. Industrial & Scientific > Tapes. Gorilla",
    "🧤",
    "",
    "very long item text " * 300,
    "Ελληνικά και العربية",
    "3D printer filament. Industrial & Scientific > Additive Manufacturing Products. XYZ",
]


def model_config(settings, model: str) -> dict:
    response = httpx.get(f"http://{settings.triton.http_url}/v2/models/{model}/config", timeout=10)
    response.raise_for_status()
    return response.json()


def latest_folder(repo: Path, model: str) -> Path:
    return repo / model / str(versions(repo / model)[-1])


@pytest.fixture(scope="module")
def reference(stack_settings, settings) -> dict[str, InProcessScorer]:
    """In-process scorers from the version folders Triton serves, in the precision Triton uses."""
    out = {}
    for model in MODELS:
        module, tokenizer, metadata = load_folder(latest_folder(stack_settings.model_repo, model))
        precision = model_config(settings, model).get("parameters", {}).get("precision", {}).get("string_value") or None
        out[model] = InProcessScorer(module, tokenizer, max_length=metadata.max_length, precision=precision)
    return out


@pytest.fixture(scope="module")
def triton(settings) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(settings.triton.grpc_url)
    yield client
    client.close()


def served(client: grpcclient.InferenceServerClient, model: str, contexts: list[str], items: list[str]) -> np.ndarray:
    tensors = []
    for name, texts in ((contract.SCORER_INPUT_CONTEXT, contexts), (contract.SCORER_INPUT_ITEM, items)):
        payload = np.array([[text.encode("utf-8")] for text in texts], dtype=np.object_)
        tensor = grpcclient.InferInput(name, list(payload.shape), "BYTES")
        tensor.set_data_from_numpy(payload)
        tensors.append(tensor)
    result = client.infer(model, tensors, outputs=[grpcclient.InferRequestedOutput(contract.SCORER_OUTPUT)])
    scores = result.as_numpy(contract.SCORER_OUTPUT)
    assert scores.shape == (len(items), 1) and scores.dtype == np.float32
    return scores.reshape(-1)


@pytest.mark.parametrize("model", MODELS)
def test_served_scores_equal_in_process(triton, reference, model):
    contexts = [c for c in CONTEXTS for _ in ITEMS]
    items = ITEMS * len(CONTEXTS)
    expected = reference[model].score_pairs(contexts, items)
    np.testing.assert_allclose(served(triton, model, contexts, items), expected, atol=1e-4, rtol=0)
    assert np.isfinite(expected).all()


@pytest.mark.parametrize("model", MODELS)
def test_a_batch_of_one_for_every_edge_text(triton, reference, model):
    for context, item in zip(CONTEXTS, ITEMS):
        expected = reference[model].score_pairs([context], [item])
        np.testing.assert_allclose(served(triton, model, [context], [item]), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("model", MODELS)
def test_a_batch_of_max_batch_size_and_no_more(settings, triton, reference, model):
    size = int(model_config(settings, model)["max_batch_size"])
    assert size >= 100, "a 100-candidate list must fit in one request"
    contexts = [CONTEXTS[i % len(CONTEXTS)] for i in range(size)]
    items = [f"item {i} {ITEMS[i % len(ITEMS)][:80]}" for i in range(size)]
    np.testing.assert_allclose(
        served(triton, model, contexts, items), reference[model].score_pairs(contexts, items), atol=1e-4, rtol=0
    )
    with pytest.raises(Exception, match="batch"):
        served(triton, model, contexts + ["x"], items + ["y"])


def test_client_tokenised_inputs_score_like_texts(triton, reference):
    model = contract.CROSS_ENCODER
    scorer = reference[model]
    tokens = CachedTokenizer(scorer.tokenizer, scorer.max_length).pairs(CONTEXTS, ITEMS)
    tensors = []
    for name, key in (
        (contract.SCORER_INPUT_IDS, "input_ids"),
        (contract.SCORER_INPUT_MASK, "attention_mask"),
        (contract.SCORER_INPUT_TYPES, "token_type_ids"),
    ):
        tensor = grpcclient.InferInput(name, list(tokens[key].shape), "INT64")
        tensor.set_data_from_numpy(tokens[key].numpy())
        tensors.append(tensor)
    scores = triton.infer(model, tensors).as_numpy(contract.SCORER_OUTPUT).reshape(-1)
    np.testing.assert_allclose(scores, served(triton, model, CONTEXTS, ITEMS), atol=1e-5, rtol=0)


def _corrupt_bytes(folder: Path) -> None:
    (folder / WEIGHTS).write_bytes(b"not a safetensors file" * 8)


def _misshapen(folder: Path) -> None:
    state = load_file(str(folder / WEIGHTS))
    state["head.weight"] = state["head.weight"][:, :-1].contiguous()
    save_file(state, str(folder / WEIGHTS))


def _non_finite(folder: Path) -> None:
    state = load_file(str(folder / WEIGHTS))
    state["head.weight"][0, 0] = float("nan")
    save_file(state, str(folder / WEIGHTS))


def _missing_weights(folder: Path) -> None:
    (folder / WEIGHTS).unlink()


def _missing_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (folder / name).unlink(missing_ok=True)


@pytest.mark.parametrize("damage", [_corrupt_bytes, _misshapen, _non_finite, _missing_weights, _missing_tokenizer])
def test_a_broken_version_is_refused_and_the_previous_keeps_serving(stack_settings, settings, triton, reference, damage):
    model = contract.CROSS_ENCODER
    http = f"http://{settings.triton.http_url}"
    model_dir = stack_settings.model_repo / model
    serving = versions(model_dir)[-1]
    broken = model_dir / str(serving + 1)
    shutil.copytree(model_dir / str(serving), broken)  # a complete copy, then one thing wrong with it
    damage(broken)
    try:
        response = httpx.post(f"{http}/v2/repository/models/{model}/load", timeout=120)
        assert response.status_code != 200, "Triton accepted a broken version"
        assert httpx.get(f"{http}/v2/models/{model}/versions/{serving + 1}/ready", timeout=10).status_code != 200
        assert httpx.get(f"{http}/v2/models/{model}/versions/{serving}/ready", timeout=10).status_code == 200
        assert httpx.get(f"{http}/v2/models/{model}/ready", timeout=10).status_code == 200
        expected = reference[model].score_pairs(CONTEXTS, ITEMS)
        np.testing.assert_allclose(served(triton, model, CONTEXTS, ITEMS), expected, atol=1e-4, rtol=0)
    finally:
        shutil.rmtree(broken, ignore_errors=True)
        httpx.post(f"{http}/v2/repository/models/{model}/load", timeout=120)
    assert httpx.get(f"{http}/v2/models/{model}/versions/{serving}/ready", timeout=10).status_code == 200
