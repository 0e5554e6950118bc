"""Triton Python-backend models for the encoder and the scorer, shared by every version.

Each version's ``model.py`` imports a class from here, so the serving code is
defined once. Requests are gathered into one batch (Triton's dynamic batcher
already merged concurrent requests), tokenised here, run under
``torch.inference_mode`` (bf16 autocast on GPU) and split back per request.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from streamrec.model import contract
from streamrec.model.artifacts import load_folder


def _texts(pb_utils, request, name: str) -> list[str]:
    raw = pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)
    return [value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value) for value in raw]


class _Backend:
    def initialize(self, args: dict) -> None:
        folder = Path(args["model_repository"]) / args["model_version"]
        gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{args.get('model_instance_device_id', 0)}" if gpu else "cpu")
        self.module, self.tokenizer, self.metadata = load_folder(folder, self.device)
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if gpu else torch.autocast("cpu", enabled=False)
        config = json.loads(args["model_config"])
        self.max_batch = max(int(config.get("max_batch_size", 64)), 1)

    def _run(self, **inputs: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), self.autocast:
            outputs = self.module(**{k: v.to(self.device) for k, v in inputs.items()})
        return outputs.float().cpu().numpy()

    def finalize(self) -> None:
        self.module = None


class EncoderBackend(_Backend):
    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        per_request = [_texts(pb_utils, request, contract.ENCODER_INPUT_TEXT) for request in requests]
        texts = [text for batch in per_request for text in batch]
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.metadata.max_length, return_tensors="pt"
        )
        embeddings = self._run(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        responses, start = [], 0
        for batch in per_request:
            chunk = embeddings[start : start + len(batch)].astype(np.float32)
            start += len(batch)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(contract.ENCODER_OUTPUT, chunk)]))
        return responses


class ScorerBackend(_Backend):
    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        contexts = [_texts(pb_utils, r, contract.SCORER_INPUT_CONTEXT) for r in requests]
        items = [_texts(pb_utils, r, contract.SCORER_INPUT_ITEM) for r in requests]
        tokens = self.tokenizer(
            [c for batch in contexts for c in batch],
            [i for batch in items for i in batch],
            padding=True,
            truncation="longest_first",
            max_length=self.metadata.max_length,
            return_tensors="pt",
        )
        scores = self._run(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            token_type_ids=tokens["token_type_ids"],
        )
        responses, start = [], 0
        for batch in contexts:
            chunk = scores[start : start + len(batch)].astype(np.float32).reshape(-1, 1)
            start += len(batch)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(contract.SCORER_OUTPUT, chunk)]))
        return responses
