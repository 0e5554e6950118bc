"""The sequence recommender as served: item ids in, top K over the catalog and candidate scores out.

:class:`ServedSequence` wraps an :class:`~streamrec.model.sequence.Ensemble` with the item ids
of its rows, so clients speak item ids, never row numbers. The same object answers Triton
requests (``streamrec.model.triton_backend.SequenceBackend``) and in-process calls (tests,
benchmarks, the trainer's gate), so the two cannot disagree.

* Unknown history items are dropped (a user's history may name items the model never saw and the
  catalog has not delivered yet); a history longer than the model's maximum keeps its newest
  items; an empty history is valid (the model then ranks by its priors: item biases, text).
* Top K leaves out the history's own items and items marked unavailable; fewer than K rankable
  items are padded with ``""`` and ``-inf``.
* Candidate scores are the same numbers the catalog ranking uses (the ensemble's mean
  log-softmax over the catalog); unknown ids and padding get ``-inf``.
* :meth:`add_items` appends items known only by their text embedding (ID part zero): they are
  ranked at once, without retraining. The Triton backend calls it as the catalog grows.

A version folder (see :func:`write_version`) holds ``sequence.json`` and ``member-<n>.safetensors``
(:func:`~streamrec.model.sequence.save_ensemble`), ``items.json`` (row -> item id),
``metadata.json`` and ``model.py`` (written last: its presence marks the folder complete).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streamrec.model.sequence import EVENT_TYPES, PURCHASE, Ensemble, load_ensemble, save_ensemble

ITEMS_FILE = "items.json"
ENSEMBLE_FILE = "sequence.json"
TYPE_IDS = {"click": EVENT_TYPES.index("click"), "add_to_cart": EVENT_TYPES.index("cart"),
            "cart": EVENT_TYPES.index("cart"), "purchase": PURCHASE}
"""Event types of the contract (and the model's own names) -> BERT token types."""


@dataclass
class Ranked:
    """One batch's answer: ``top_items`` (B lists of K ids), ``top_scores`` (B, K), ``candidate_scores`` (B, C)."""

    top_items: list[list[str]]
    top_scores: np.ndarray
    candidate_scores: np.ndarray


class ServedSequence:
    def __init__(self, ensemble: Ensemble, item_ids: Sequence[str]) -> None:
        if not ensemble.members:
            raise ValueError("a served sequence model needs at least one ensemble member")
        rows = ensemble.members[0].n_items
        if len(item_ids) != rows or any(member.n_items != rows for member in ensemble.members):
            raise ValueError(f"{len(item_ids)} item ids for models of {[m.n_items for m in ensemble.members]} items")
        if len(set(item_ids)) != len(item_ids):
            raise ValueError("item ids repeat")
        self.ensemble = ensemble
        self.item_ids = list(item_ids)
        self.position = {item_id: row for row, item_id in enumerate(self.item_ids)}
        self.available = torch.ones(rows, dtype=torch.bool)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def max_history(self) -> int:
        return self.ensemble.members[0].config.max_history

    @property
    def device(self) -> torch.device:
        return self.ensemble.members[0].items.text.device

    # -- the catalog --------------------------------------------------------------------------

    def add_items(self, item_ids: Sequence[str], text: np.ndarray | torch.Tensor) -> list[str]:
        """Append the unknown ones of ``item_ids`` with their text embeddings; returns those added."""
        vectors = torch.as_tensor(np.asarray(text, dtype=np.float32))
        fresh = [(item_id, row) for row, item_id in enumerate(item_ids) if item_id not in self.position]
        if not fresh:
            return []
        rows = vectors[[row for _, row in fresh]]
        expected = self.ensemble.members[0].items.text.shape[1]
        if rows.shape[1] != expected:
            raise ValueError(f"text embeddings have {rows.shape[1]} dimensions, the model {expected}")
        for member in self.ensemble.members:
            member.add_items(rows)
        for item_id, _ in fresh:
            self.position[item_id] = len(self.item_ids)
            self.item_ids.append(item_id)
        self.available = torch.cat([self.available, torch.ones(len(fresh), dtype=torch.bool)])
        return [item_id for item_id, _ in fresh]

    def set_available(self, availability: dict[str, bool]) -> None:
        """Mark known items (un)available for the top K; unknown ids are ignored."""
        for item_id, flag in availability.items():
            row = self.position.get(item_id)
            if row is not None:
                self.available[row] = bool(flag)

    # -- ranking ------------------------------------------------------------------------------

    def rows(self, histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]] | None = None
             ) -> tuple[list[list[int]], list[list[int]]]:
        """Known history items as rows, newest ``max_history`` kept, with their token types."""
        out_items, out_types = [], []
        for n, history in enumerate(histories):
            kinds = types[n] if types is not None else [""] * len(history)
            if len(kinds) != len(history):
                raise ValueError(f"history {n} has {len(history)} items and {len(kinds)} event types")
            pairs = [(self.position[item], TYPE_IDS.get(kind, PURCHASE)) for item, kind in zip(history, kinds)
                     if item in self.position]
            pairs = pairs[-self.max_history:]
            out_items.append([item for item, _ in pairs])
            out_types.append([kind for _, kind in pairs])
        return out_items, out_types

    @torch.no_grad()
    def scores(self, histories: Sequence[Sequence[str]], types: Sequence[Sequence[str]] | None = None) -> torch.Tensor:
        """(B, N) scores of every catalog row for each history."""
        rows, kinds = self.rows(histories, types)
        if not rows:
            return torch.zeros((0, self.n_items))
        return self.ensemble.score(rows, types=kinds).float().cpu()

    def rank(self, histories: Sequence[Sequence[str]], *, types: Sequence[Sequence[str]] | None = None,
             k: int | Sequence[int] = 0, candidates: Sequence[Sequence[str]] | None = None) -> Ranked:
        """Top ``k`` (one value, or one per history) and the scores of ``candidates`` (one list per history)."""
        scores = self.scores(histories, types)
        return self.answer(scores, histories, k=k, candidates=candidates)

    def answer(self, scores: torch.Tensor, histories: Sequence[Sequence[str]], *, k: int | Sequence[int] = 0,
               candidates: Sequence[Sequence[str]] | None = None) -> Ranked:
        """Top K and candidate scores from ``scores`` (B, N); whole-batch tensor operations, the
        per-history work in plain Python and NumPy (per-element tensor indexing was most of the
        time of a small model)."""
        batch = len(histories)
        ks = [int(k)] * batch if isinstance(k, int | np.integer) else [int(value) for value in k]
        width = max(ks, default=0)
        top_items = [[""] * width for _ in range(batch)]
        top_scores = np.full((batch, width), -np.inf, np.float32)
        if width:
            masked = scores.clone()
            masked[:, ~self.available] = -torch.inf
            seen_rows, seen_columns = [], []
            for row, history in enumerate(histories):
                for item in history:
                    position = self.position.get(item)
                    if position is not None:
                        seen_rows.append(row)
                        seen_columns.append(position)
            if seen_rows:
                masked[seen_rows, seen_columns] = -torch.inf
            values, index = masked.topk(min(width, self.n_items), dim=1)
            values, index = values.numpy(), index.numpy()
            for row in range(batch):
                count = min(ks[row], values.shape[1])
                finite = np.isfinite(values[row, :count])
                top_scores[row, :count] = np.where(finite, values[row, :count], -np.inf)
                slots = zip(index[row, :count].tolist(), finite.tolist(), strict=True)
                top_items[row][:count] = [self.item_ids[i] if ok else "" for i, ok in slots]
        columns = max((len(c) for c in candidates), default=0) if candidates is not None else 0
        candidate_scores = np.full((batch, columns), -np.inf, np.float32)
        if columns:
            table = scores.numpy()
            for row, wanted in enumerate(candidates or ()):
                positions = np.fromiter((self.position.get(item_id, -1) for item_id in wanted), np.int64, len(wanted))
                known = positions >= 0
                candidate_scores[row, : len(wanted)][known] = table[row, positions[known]]
        return Ranked(top_items, top_scores, candidate_scores)


# -- version folders ----------------------------------------------------------------------------


def write_version(folder: Path, ensemble: Ensemble, item_ids: Sequence[str], metadata_json: str, model_py: str) -> None:
    """Everything a version needs, ``model.py`` last (its presence marks the folder complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_ensemble(ensemble, folder)
    (folder / ITEMS_FILE).write_text(json.dumps(list(item_ids), ensure_ascii=False), encoding="utf-8")
    (folder / "metadata.json").write_text(metadata_json)
    for path in folder.iterdir():
        os.chmod(path, 0o644)  # Triton may run as another user than the trainer
    (folder / "model.py").write_text(model_py)


def load_version(folder: Path, device: str | torch.device = "cpu") -> ServedSequence:
    """Load a sequence version; a missing file, misshapen or non-finite weights raise."""
    for name in (ENSEMBLE_FILE, ITEMS_FILE, "member-0.safetensors"):
        if not (folder / name).exists():
            raise FileNotFoundError(f"{folder} is incomplete: missing {name}")
    ensemble = load_ensemble(folder, device=str(device))
    for n, member in enumerate(ensemble.members):
        for name, tensor in member.state_dict().items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise ValueError(f"{folder}: member {n} weight {name} has non-finite values")
    item_ids = json.loads((folder / ITEMS_FILE).read_text(encoding="utf-8"))
    if not isinstance(item_ids, list) or not all(isinstance(item, str) for item in item_ids):
        raise ValueError(f"{folder}/{ITEMS_FILE} is not a list of item ids")
    return ServedSequence(ensemble, item_ids)
