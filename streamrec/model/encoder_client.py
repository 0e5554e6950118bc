"""Async client for the ``item_encoder`` model on Triton (gRPC).

Used wherever text must become an embedding at run time: catalog items in the
streams worker, queries and new items in serving. Texts are sent in chunks of
at most ``batch_size``; Triton's dynamic batcher merges concurrent callers.
"""

from __future__ import annotations

import numpy as np
import tritonclient.grpc.aio as grpcclient

from streamrec.model import contract


class EncoderUnavailable(RuntimeError):
    """Triton could not embed the texts (down, timed out or the model is not ready)."""


class TritonEncoderClient:
    def __init__(
        self, url: str, *, model: str = contract.ITEM_ENCODER, timeout_s: float = 10.0, batch_size: int = 64
    ) -> None:
        self._client = grpcclient.InferenceServerClient(url=url)
        self._model = model
        self._timeout_s = timeout_s
        self._batch_size = batch_size

    async def encode(self, texts: list[str]) -> np.ndarray:
        """Embeddings, one row per text (float32, L2-normalised)."""
        chunks = [texts[i : i + self._batch_size] for i in range(0, len(texts), self._batch_size)]
        rows = [await self._encode_chunk(chunk) for chunk in chunks]
        return np.concatenate(rows) if rows else np.zeros((0, contract.EMBEDDING_DIM), np.float32)

    async def _encode_chunk(self, texts: list[str]) -> np.ndarray:
        payload = np.array([[text.encode("utf-8")] for text in texts], dtype=np.object_)
        tensor = grpcclient.InferInput(contract.ENCODER_INPUT_TEXT, list(payload.shape), "BYTES")
        tensor.set_data_from_numpy(payload)
        try:
            result = await self._client.infer(
                self._model,
                [tensor],
                outputs=[grpcclient.InferRequestedOutput(contract.ENCODER_OUTPUT)],
                client_timeout=self._timeout_s,
            )
        except Exception as error:  # tritonclient raises InferenceServerException and grpc errors
            raise EncoderUnavailable(f"{self._model}: {error}") from error
        return result.as_numpy(contract.ENCODER_OUTPUT)

    async def close(self) -> None:
        await self._client.close()
