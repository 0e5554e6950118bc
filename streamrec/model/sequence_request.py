"""The ``bert_scorer`` request a client sends: histories, event types, K and candidates as tensors.

Item ids travel as UTF-8 ``BYTES``, rows right-padded with ``b""`` (the backend drops padding), so
clients never need the model's row numbers and a version with a grown item table needs no new
client.
"""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient

from streamrec.model import contract


def _padded(rows: list[list[str]]) -> np.ndarray:
    width = max(1, max((len(row) for row in rows), default=0))
    return np.array([[item.encode() for item in row] + [b""] * (width - len(row)) for row in rows], dtype=np.object_)


def sequence_inputs(histories: list[list[str]], *, k: int | list[int] = 0, types: list[list[str]] | None = None,
                    candidates: list[list[str]] | None = None, module=grpcclient) -> list:
    """The ``bert_scorer`` request for a batch of histories (``module``: ``tritonclient.grpc`` or its aio twin)."""
    tensors = [(contract.HISTORY, _padded(histories), "BYTES")]
    if types is not None:
        tensors.append((contract.HISTORY_TYPES, _padded(types), "BYTES"))
    ks = [k] * len(histories) if isinstance(k, int) else list(k)
    tensors.append((contract.TOP_K, np.array(ks, dtype=np.int32).reshape(-1, 1), "INT32"))
    if candidates is not None:
        tensors.append((contract.CANDIDATES, _padded(candidates), "BYTES"))
    inputs = []
    for name, array, datatype in tensors:
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


