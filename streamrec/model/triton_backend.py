"""Triton Python-backend models for the encoder and the scorers, shared by every version.

Each version's ``model.py`` imports a class from here, so the serving code is defined once.
Requests are gathered into one batch (Triton's dynamic batcher already merged concurrent
requests), tokenised here with :class:`~streamrec.model.inference.CachedTokenizer` (item
texts repeat across requests, so most are cache hits), run by a
:class:`~streamrec.model.inference.Runner` and split back per request.

Settings come from ``config.pbtxt`` ``parameters`` (the device from ``instance_group``):

* ``precision`` — ``auto`` (default) | ``fp32`` | ``bf16`` | ``fp16``; ``auto`` is bf16 on a GPU
  and on a CPU with native bf16, fp32 on other CPUs (:mod:`streamrec.model.precision`);
* ``compile`` — ``"true"`` wraps the module in ``torch.compile`` (sequence lengths are padded
  to multiples of ``pad_to`` then, so few shapes are compiled);
* ``threads`` — torch CPU threads of this instance (default: torch's choice);
* ``pad_to`` — pad the sequence length up to a multiple of this (default 1: no padding).

A version that cannot be loaded (missing file, misshapen or non-finite weights, wrong kind)
raises in ``initialize``: Triton refuses it and keeps serving the version it had.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from streamrec.model import contract
from streamrec.model.artifacts import load_folder
from streamrec.model.inference import CachedTokenizer, Runner


def _texts(pb_utils, request, name: str) -> list[str]:
    raw = pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)
    return [value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value) for value in raw]


def _parameters(config: dict) -> dict[str, str]:
    return {key: value.get("string_value", "") for key, value in (config.get("parameters") or {}).items()}


def _pad_length(inputs: dict[str, torch.Tensor], multiple: int, limit: int) -> dict[str, torch.Tensor]:
    """Right-pad every [batch, length] tensor with zeros up to a multiple (attention ignores it)."""
    length = inputs["input_ids"].shape[1]
    target = min(max(limit, length), -(-length // multiple) * multiple)
    if target == length:
        return inputs
    return {name: torch.nn.functional.pad(tensor, (0, target - length)) for name, tensor in inputs.items()}


class _Backend:
    kind: str = ""

    def initialize(self, args: dict) -> None:
        folder = Path(args["model_repository"]) / args["model_version"]
        config = json.loads(args["model_config"])
        parameters = _parameters(config)
        gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        device = torch.device(f"cuda:{args.get('model_instance_device_id', 0)}" if gpu else "cpu")
        if parameters.get("threads"):
            torch.set_num_threads(int(parameters["threads"]))
        module, tokenizer, self.metadata = load_folder(folder, device)
        if self.metadata.kind != self.kind:
            raise ValueError(f"{folder} holds a {self.metadata.kind}, this model serves a {self.kind}")
        self.runner = Runner(
            module,
            device=device,
            precision=parameters.get("precision") or None,  # type: ignore[arg-type]
            compile=parameters.get("compile", "false").lower() == "true",
        )
        self.tokens = CachedTokenizer(tokenizer, self.metadata.max_length)
        self.pad_to = int(parameters.get("pad_to") or 1)
        self.max_batch = max(int(config.get("max_batch_size", 64)), 1)

    def _run(self, inputs: dict[str, torch.Tensor]) -> np.ndarray:
        if self.pad_to > 1:
            inputs = _pad_length(inputs, self.pad_to, self.metadata.max_length)
        return self.runner(inputs)

    def finalize(self) -> None:
        self.runner = None


def _split(pb_utils, outputs: np.ndarray, sizes: list[int], name: str, shape: tuple[int, ...]) -> list:
    responses, start = [], 0
    for size in sizes:
        chunk = outputs[start : start + size].astype(np.float32).reshape(size, *shape)
        start += size
        responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(name, chunk)]))
    return responses


class EncoderBackend(_Backend):
    kind = "encoder"

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        per_request = [_texts(pb_utils, request, contract.ENCODER_INPUT_TEXT) for request in requests]
        tokens = self.tokens.texts([text for batch in per_request for text in batch])
        embeddings = self._run({"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]})
        return _split(pb_utils, embeddings, [len(batch) for batch in per_request], contract.ENCODER_OUTPUT, (-1,))


class ScorerBackend(_Backend):
    """Scores (context, item) pairs sent as texts, or as token ids a client tokenised itself."""

    kind = "scorer"

    def _request_tokens(self, pb_utils, request) -> dict[str, torch.Tensor]:
        ids = pb_utils.get_input_tensor_by_name(request, contract.SCORER_INPUT_IDS)
        if ids is None:
            contexts = _texts(pb_utils, request, contract.SCORER_INPUT_CONTEXT)
            items = _texts(pb_utils, request, contract.SCORER_INPUT_ITEM)
            return self.tokens.pairs(contexts, items)
        mask = pb_utils.get_input_tensor_by_name(request, contract.SCORER_INPUT_MASK)
        types = pb_utils.get_input_tensor_by_name(request, contract.SCORER_INPUT_TYPES)
        if mask is None or types is None:
            raise ValueError(f"{contract.SCORER_INPUT_IDS} needs {contract.SCORER_INPUT_MASK} and {contract.SCORER_INPUT_TYPES}")
        tensors = {
            "input_ids": torch.from_numpy(ids.as_numpy().astype(np.int64)),
            "attention_mask": torch.from_numpy(mask.as_numpy().astype(np.int64)),
            "token_type_ids": torch.from_numpy(types.as_numpy().astype(np.int64)),
        }
        if tensors["input_ids"].shape[1] > self.metadata.max_length:
            raise ValueError(f"sequences longer than {self.metadata.max_length} tokens")
        return tensors

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        parts: list[dict[str, torch.Tensor] | None] = []
        errors: list[str | None] = []
        for request in requests:
            try:
                parts.append(self._request_tokens(pb_utils, request))
                errors.append(None)
            except ValueError as error:
                parts.append(None)
                errors.append(str(error))
        good = [part for part in parts if part is not None]
        sizes = [part["input_ids"].shape[0] for part in good]
        scores = np.zeros(0, np.float32)
        if good:
            width = max(part["input_ids"].shape[1] for part in good)
            batch = {
                name: torch.cat([torch.nn.functional.pad(part[name], (0, width - part[name].shape[1])) for part in good])
                for name in ("input_ids", "attention_mask", "token_type_ids")
            }
            scores = self._run(batch)
        answered = iter(_split(pb_utils, scores, sizes, contract.SCORER_OUTPUT, (1,)))
        return [
            next(answered) if error is None else pb_utils.InferenceResponse(error=pb_utils.TritonError(error))
            for error in errors
        ]
