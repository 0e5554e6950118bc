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


# -- the sequence scorer ------------------------------------------------------------------------


def _id_rows(pb_utils, request, name: str) -> list[list[str]] | None:
    """A [batch, length] BYTES input as lists of strings, padding (``b""``) dropped; None if absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    array = tensor.as_numpy()
    array = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, -1)
    rows = []
    for row in array:
        values = [value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value) for value in row]
        rows.append(values)
    return rows


class SequenceBackend:
    """``bert_scorer``: a batch of histories -> the top K over the catalog and candidate scores.

    Concurrent requests (merged by the dynamic batcher) are scored in one forward pass; each gets
    its own K and candidates. The item table follows the catalog without a reload: with
    ``catalog_refresh_s`` > 0 (default 2) a thread reads catalog changes from Redis (the
    ``STREAMREC_REDIS__URL`` the process was started with, as every component reads it), appends
    items the model does not know by their stored text embedding and applies availability; a
    Redis that is away only delays that. ``precision`` ``bf16`` (or ``auto`` on a GPU) runs the
    network under bf16 autocast on a GPU; on a CPU the model (hidden 64) runs in fp32.
    """

    def initialize(self, args: dict) -> None:
        import threading

        from streamrec.model.artifacts import read_metadata
        from streamrec.model.served_sequence import load_version

        folder = Path(args["model_repository"]) / args["model_version"]
        config = json.loads(args["model_config"])
        parameters = _parameters(config)
        gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{args.get('model_instance_device_id', 0)}" if gpu else "cpu")
        if parameters.get("threads"):
            torch.set_num_threads(int(parameters["threads"]))
        self.metadata = read_metadata(folder)
        if self.metadata.kind != "sequence":
            raise ValueError(f"{folder} holds a {self.metadata.kind}, this model serves a sequence model")
        self.model = load_version(folder, self.device)
        precision = (parameters.get("precision") or "auto").lower()
        self.autocast = gpu and precision in ("auto", "bf16")
        self.lock = threading.Lock()
        self.stop = threading.Event()
        refresh_s = float(parameters.get("catalog_refresh_s") or 2.0)
        self.follower = None
        if refresh_s > 0:
            self.follower = threading.Thread(target=self._follow_catalog, args=(refresh_s,), daemon=True)
            self.follower.start()

    def _follow_catalog(self, refresh_s: float) -> None:
        import asyncio
        import logging

        asyncio.run(_follow_catalog(self, refresh_s, logging.getLogger("streamrec.bert_scorer")))

    def sync_catalog(self, ids: list[str], vectors: np.ndarray, availability: dict[str, bool]) -> list[str]:
        with self.lock:
            added = self.model.add_items(ids, vectors) if ids else []
            self.model.set_available(availability)
        return added

    def _score(self, histories: list[list[str]], types: list[list[str]] | None) -> torch.Tensor:
        if self.autocast:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self.model.scores(histories, types)
        return self.model.scores(histories, types)

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        parsed, errors = [], []
        for request in requests:
            try:
                histories = _id_rows(pb_utils, request, contract.HISTORY)
                if histories is None:
                    raise ValueError(f"{contract.HISTORY} is required")
                histories = [[item for item in row if item] for row in histories]
                types = _id_rows(pb_utils, request, contract.HISTORY_TYPES)
                if types is not None:
                    if len(types) != len(histories):
                        raise ValueError(f"{contract.HISTORY_TYPES} has {len(types)} rows, {contract.HISTORY} {len(histories)}")
                    types = [[kind for kind in row if kind] for row in types]
                    for n, (items, kinds) in enumerate(zip(histories, types)):
                        if len(items) != len(kinds):
                            raise ValueError(f"row {n}: {len(items)} items and {len(kinds)} event types")
                k_tensor = pb_utils.get_input_tensor_by_name(request, contract.TOP_K)
                ks = [0] * len(histories) if k_tensor is None else [int(v) for v in k_tensor.as_numpy().reshape(-1)]
                if len(ks) == 1 and len(histories) > 1:
                    ks = ks * len(histories)
                if len(ks) != len(histories) or any(k < 0 for k in ks):
                    raise ValueError(f"{contract.TOP_K} needs one value >= 0 per history")
                candidates = _id_rows(pb_utils, request, contract.CANDIDATES)
                if candidates is not None and len(candidates) != len(histories):
                    raise ValueError(f"{contract.CANDIDATES} has {len(candidates)} rows, {contract.HISTORY} {len(histories)}")
                parsed.append((histories, types, ks, candidates))
                errors.append(None)
            except ValueError as error:
                parsed.append(None)
                errors.append(str(error))
        good = [part for part in parsed if part is not None]
        responses_good = []
        if good:
            histories = [h for part in good for h in part[0]]
            any_types = any(part[1] is not None for part in good)
            types = None
            if any_types:
                types = [t for part in good for t in (part[1] if part[1] is not None else [["purchase"] * len(h) for h in part[0]])]
            with self.lock:
                scores = self._score(histories, types)
                start = 0
                for part in good:
                    size = len(part[0])
                    answer = self.model.answer(scores[start : start + size], part[0], k=part[2], candidates=part[3])
                    start += size
                    candidate_scores = answer.candidate_scores
                    if part[3] is None:
                        candidate_scores = np.zeros((size, 0), np.float32)
                    responses_good.append(pb_utils.InferenceResponse([
                        pb_utils.Tensor(contract.TOPK_ITEMS, np.array([[item.encode() for item in row] for row in answer.top_items],
                                                                    dtype=np.object_).reshape(size, -1)),
                        pb_utils.Tensor(contract.TOPK_SCORES, answer.top_scores.reshape(size, -1)),
                        pb_utils.Tensor(contract.CANDIDATE_SCORES, candidate_scores.reshape(size, -1)),
                    ]))
        answered = iter(responses_good)
        return [
            next(answered) if error is None else pb_utils.InferenceResponse(error=pb_utils.TritonError(error))
            for error in errors
        ]

    def finalize(self) -> None:
        if getattr(self, "stop", None) is not None:
            self.stop.set()
        if getattr(self, "follower", None) is not None:
            self.follower.join(timeout=5)


async def _follow_catalog(backend: SequenceBackend, refresh_s: float, log) -> None:
    """Keep ``backend``'s item table in step with the catalog in Redis until ``backend.stop`` is set.

    Reads the catalog's change log (``z:catalog``) through a cursor (each change once, a few
    seconds back for stores still in flight); items whose embedding the model cannot take in (another dimension,
    non-finite or zero: :meth:`~streamrec.store.catalog.CatalogRecord.text_vector`) are left
    out, never fatal.
    """
    import asyncio

    from streamrec.settings import Settings
    from streamrec.store.catalog_store import CatalogStore, ChangeCursor
    from streamrec.store.connection import connect

    client = connect(Settings().redis)
    catalog = CatalogStore(client)
    changes = ChangeCursor(catalog)
    dim = backend.model.ensemble.members[0].items.text.shape[1]
    try:
        while not backend.stop.is_set():
            try:
                changed = await changes.read()
                if changed:
                    records = (await catalog.read([item for item, _ in changed])).values()
                    fresh = {r.item_id: vector for r in records if r.item_id not in backend.model.position
                             and (vector := r.text_vector(dim)) is not None}
                    vectors = np.stack(list(fresh.values())) if fresh else np.zeros((0, dim), np.float32)
                    added = backend.sync_catalog(list(fresh), vectors, {r.item_id: r.available for r in records})
                    if added:
                        log.info("bert_scorer: %d new catalog items rankable by their text", len(added))
                changes.commit()
            except Exception as error:  # noqa: BLE001 - Redis away: keep serving the table we have
                log.warning("bert_scorer: catalog refresh failed: %s", error)
            await asyncio.sleep(refresh_s)
    finally:
        await client.aclose()
