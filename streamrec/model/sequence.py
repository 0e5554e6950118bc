"""The sequence recommender: a BERT over the user's items that ranks the whole catalog at once.

What it computes, for a history ``s_1 .. s_t`` (oldest first) and every catalog item ``j``::

    score(j) = u · v_j + b_j + Σ_k w_k(u) · signal_k(j)

* ``v_j``, the item vector, is used on both sides (input tokens and output, tied as in SASRec):
  ``PW(text_j) + id_j + c``: a parametric-whitening projection (UniSRec, Hou et al. 2022:
  subtract a learned centre, then a linear map) of the item's frozen all-MiniLM-L6-v2 text
  embedding, a learned ID embedding that starts at zero and is dropped at random in training
  (each input occurrence and each output item, so the text path alone must rank well, as in
  the text/ID fusion of UniSRec's inductive setting and of LM-initialised SASRec, Harte et al.
  2023), and a learned vector ``c``. A new catalog item has no ID row yet (zero): it is ranked
  at once through its text.
* ``u``, the user vector, is a ``transformers.BertModel`` over ``v_{s_1} .. v_{s_t}`` given as
  ``inputs_embeds``; BERT's own position embeddings and token-type embeddings carry the position
  and the event type (click, cart, purchase). ``masking="causal"`` (SASRec: decoder attention,
  every position predicts the next item) reads ``u`` at the last item; ``"cloze"`` (BERT4Rec:
  bidirectional attention, masked items predicted) appends a mask token and reads ``u`` there.
* ``b_j`` is a per-item bias (dropped with the ID) plus a linear function of the text, so a new
  item gets the prior its text suggests.
* the signals are the two non-neural rankers, computed here so the network learns how much to
  trust them per user (``w_k(u) = w_k + g_k · u``), jointly with everything else:
  co-visitation counts from the newest item (forward and backward) and from the few items
  before it (recency-weighted); the same counts passed on to each co-visited item's nearest
  items by text (``covisit_text``: a sparse co-visitation row reaches look-alike items nobody
  bought together yet); the text cosine of each item with the newest item, with the
  recency-weighted mean of the recent items and with the most similar recent item. Counts
  enter as ``log1p``. The trainer computes the counts of a training row with that user's own
  sequence left out (``trainer.offline.sequence_train``), so the weights learned are those that
  hold for a user the counts have not seen, which is every user at serving time.

One matrix product (``u`` against all ``v``), a few gathered co-visitation and text rows and one
product with the sparse text-neighbour kernel (``neighbours`` entries per item, built in row
chunks, grown row by row when items are added) rank the catalog; scoring given candidates gathers their columns only. Full-softmax cross-entropy over the catalog at every
position is the loss (Klenitskiy & Vasilev 2023, "Turning Dross Into Gold Loss: is BERT4Rec
really better than SASRec?": SASRec with full CE beats BERT4Rec and sampled losses); the sampled
softmax with logQ correction for large catalogs lives in the trainer.

Measured on Amazon Scientific (``benchmarks/sequence_quality.py``, valid split, history removed,
3 seeds): NDCG@10 0.120 against co-visitation 0.107 and an ID-only SASRec 0.100; next-item
(causal) training beat cloze on held-back data (0.115 vs 0.113). Tried and lost on held-back
data: UniSRec's mixture of whitening experts (``experts=4``), hidden 128, more dropout.

This module is what serving needs at run time: the configuration, the network, the
co-visitation counts it is built with, scoring, and saving/loading (safetensors + JSON).
Nothing here downloads anything. ``signals(recent, covisit=...)`` takes fresh counts in place
of the ones frozen at training time; ``add_items`` makes new items rankable at once.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from transformers import BertConfig, BertModel

EVENT_TYPES = ("click", "cart", "purchase")
"""Token types of the BERT input, in this order (index = token type id)."""
PURCHASE = EVENT_TYPES.index("purchase")
SIGNALS = ("covisit_next", "covisit_prev", "covisit_recent", "text_last", "text_recent", "covisit_text", "text_max")
BASE_SIGNALS = SIGNALS[:5]
COVISIT_SIGNALS = SIGNALS[:3]
PAD = -1
MASK = -2


@dataclass(frozen=True)
class SequenceConfig:
    """Shape and regularisation of the network (the training schedule is the trainer's)."""

    hidden: int = 64
    layers: int = 2
    heads: int = 2
    intermediate: int = 256
    max_history: int = 50
    dropout: float = 0.3
    attention_dropout: float = 0.3
    id_dropout: float = 0.3
    """Probability that an item's ID part (vector and bias) is zeroed, per input occurrence and
    per output item, in training."""
    masking: Literal["causal", "cloze"] = "causal"
    mask_prob: float = 0.3
    """Cloze only: share of the input items replaced by the mask token in training."""
    text: bool = True
    """Item vectors include the projected text embedding (False: an ID-only SASRec)."""
    ids: bool = True
    experts: int = 1
    """Parametric-whitening experts mixed by a softmax gate on the text (UniSRec's MoE adaptor uses
    8); 1 is a single whitening projection."""
    id_init: Literal["zero", "normal"] = "zero"
    """Zero with text (the text path starts the ranking); small normal without it."""
    signals: tuple[str, ...] = SIGNALS
    covisit_window: int = 3
    neighbours: int = 10
    """``covisit_text``: each co-visited item passes its count on to this many text neighbours."""
    neighbour_temperature: float = 0.05
    covisit_backward: float = 0.5
    recent: int = 5
    recency: float = 0.7

    def to_dict(self) -> dict:
        out = asdict(self)
        out["signals"] = list(self.signals)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> SequenceConfig:
        return cls(**{**data, "signals": tuple(data.get("signals", SIGNALS))})


CPU_CONFIG = SequenceConfig()
"""Trains in minutes on a 2-core CPU (about 20k interactions)."""
GPU_CONFIG = replace(CPU_CONFIG, hidden=256, layers=4, heads=4, intermediate=1024, max_history=200)
"""For a GPU and a catalog of real size; defined, not measured here."""
ID_ONLY_CONFIG = replace(CPU_CONFIG, text=False, id_init="normal", id_dropout=0.0, signals=())
"""Plain SASRec: ID embeddings only, full softmax; the reference the model must beat."""


def covisit_counts(sequences: Sequence[Sequence[int]], n_items: int, *, window: int = 3) -> np.ndarray:
    """``counts[i, j]``: Σ 1/distance over pairs where ``j`` came after ``i`` within ``window``.

    Backward co-visitation is the transpose. Pairs of one item with itself are not counted.
    """
    counts = np.zeros((n_items, n_items), dtype=np.float32)
    for sequence in sequences:
        items = np.asarray(sequence, dtype=np.int64)
        for distance in range(1, window + 1):
            first, then = items[:-distance], items[distance:]
            keep = first != then
            np.add.at(counts, (first[keep], then[keep]), 1.0 / distance)
    return counts


NEIGHBOUR_CHUNK = 2048  # rows of cosines at a time: memory O(chunk · N), never N × N


def text_neighbours(text: torch.Tensor, k: int, *, first: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosines, items) (N - first, k): the ``k`` most similar other items of rows ``first``… of
    ``text`` (unit rows), best first."""
    values, indices = [], []
    for start in range(first, text.shape[0], NEIGHBOUR_CHUNK):
        rows = torch.arange(start, min(start + NEIGHBOUR_CHUNK, text.shape[0]), device=text.device)
        cosine = text[rows] @ text.t()
        cosine[torch.arange(len(rows), device=text.device), rows] = -2.0  # never its own neighbour
        top, index = cosine.topk(k, dim=1)
        values.append(top)
        indices.append(index)
    if not values:
        return torch.zeros((0, k), device=text.device), torch.zeros((0, k), dtype=torch.long, device=text.device)
    return torch.cat(values), torch.cat(indices)


def grow_text_neighbours(text: torch.Tensor, n_old: int, cosines: torch.Tensor, index: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The neighbour lists after items ``n_old``… were appended to ``text``: the same as
    :func:`text_neighbours` over all of it (up to ties), from the old lists in O(N · new)."""
    k = index.shape[1]
    new_cosines, new_index = text_neighbours(text, k, first=n_old)
    added = torch.arange(n_old, text.shape[0], device=text.device)
    merged_cosines, merged_index = [], []
    for start in range(0, n_old, NEIGHBOUR_CHUNK):
        stop = min(start + NEIGHBOUR_CHUNK, n_old)
        to_new = text[start:stop] @ text[n_old:].t()
        both = torch.cat([cosines[start:stop], to_new], dim=1)
        candidates = torch.cat([index[start:stop], added.expand(stop - start, -1)], dim=1)
        top, where = both.topk(k, dim=1)
        merged_cosines.append(top)
        merged_index.append(candidates.gather(1, where))
    return torch.cat([*merged_cosines, new_cosines]), torch.cat([*merged_index, new_index])


def spread_kernel_t(cosines: torch.Tensor, index: torch.Tensor, temperature: float) -> torch.Tensor:
    """Kᵀ as a sparse CSR matrix (N, N), where row i of K spreads one unit over item i's neighbours
    ``index[i]`` by the softmax of their cosines; empty (0, 0) without neighbours."""
    n = index.shape[0]
    if n == 0:
        return torch.zeros((0, 0), device=index.device)  # no ``covisit_text``: never multiplied
    weights = torch.softmax(cosines / temperature, dim=1)
    sources = torch.arange(n, device=index.device).repeat_interleave(index.shape[1])
    coo = torch.sparse_coo_tensor(torch.stack([index.flatten(), sources]), weights.flatten(), (n, n), check_invariants=False)
    with warnings.catch_warnings():  # CSR is marked beta; its product with a dense matrix is what serving needs
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return coo.coalesce().to_sparse_csr()


def recent_items(histories: Sequence[Sequence[int]], count: int) -> torch.Tensor:
    """The last ``count`` items of each history, newest first, padded with ``PAD``."""
    out = torch.full((len(histories), count), PAD, dtype=torch.long)
    for row, history in enumerate(histories):
        newest = list(history)[-count:][::-1]
        if newest:
            out[row, : len(newest)] = torch.as_tensor(newest, dtype=torch.long)
    return out


class ItemTower(nn.Module):
    """Item vectors ``PW(text) + id + c`` and item biases, for the catalog and for input tokens."""

    def __init__(self, config: SequenceConfig, text: torch.Tensor) -> None:
        super().__init__()
        self.config = config
        n_items, text_dim = text.shape
        self.register_buffer("text", nn.functional.normalize(text.float(), dim=-1))
        self.centre = nn.Parameter(self.text.mean(dim=0).expand(config.experts, -1).clone())
        self.project = nn.Parameter(torch.randn(config.experts, text_dim, config.hidden) * 0.02)
        self.gate = nn.Linear(text_dim, config.experts, bias=False) if config.experts > 1 else None
        if self.gate is not None:
            nn.init.zeros_(self.gate.weight)
        self.offset = nn.Parameter(torch.zeros(config.hidden))
        self.ids = nn.Embedding(n_items, config.hidden)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.text_bias = nn.Linear(text_dim, 1)
        nn.init.zeros_(self.text_bias.weight)
        nn.init.zeros_(self.text_bias.bias)
        if config.id_init == "zero":
            nn.init.zeros_(self.ids.weight)
        else:
            nn.init.normal_(self.ids.weight, std=0.02)

    @property
    def n_items(self) -> int:
        return self.text.shape[0]

    def _keep_ids(self, shape: torch.Size, device: torch.device) -> torch.Tensor | None:
        if not self.training or self.config.id_dropout <= 0:
            return None
        return (torch.rand(shape, device=device) >= self.config.id_dropout).float()

    def vectors(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Vectors and biases of ``items`` (any shape of valid indices); ID dropout in training."""
        vector = self.offset.expand(*items.shape, -1)
        bias = torch.zeros(items.shape, device=items.device)
        if self.config.text:
            text = self.text[items]
            vector = vector + self.whiten(text)
            bias = bias + self.text_bias(text).squeeze(-1)
        if self.config.ids:
            keep = self._keep_ids(items.shape, items.device)
            ids, item_bias = self.ids(items), self.item_bias[items]
            if keep is not None:
                ids, item_bias = ids * keep.unsqueeze(-1), item_bias * keep
            vector, bias = vector + ids, bias + item_bias
        return vector, bias

    def whiten(self, text: torch.Tensor) -> torch.Tensor:
        """``Σ_e g_e(text) (text - c_e) W_e``: the projection of (normalised) text embeddings."""
        shape = text.shape[:-1]
        flat = text.reshape(-1, text.shape[-1])
        experts = torch.einsum("md,edh->meh", flat, self.project) - (self.centre.unsqueeze(1) @ self.project).squeeze(1)
        if self.gate is None:
            mixed = experts[:, 0]
        else:
            mixed = (torch.softmax(self.gate(flat), dim=-1).unsqueeze(-1) * experts).sum(dim=1)
        return mixed.reshape(*shape, -1)

    def catalog(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vectors(torch.arange(self.n_items, device=self.text.device))

    @torch.no_grad()
    def add_items(self, text: torch.Tensor) -> None:
        """Append items known only by their text: ID vector and ID bias zero."""
        text = nn.functional.normalize(text.float().to(self.text.device), dim=-1)
        self.text = torch.cat([self.text, text])
        grown = nn.Embedding(self.n_items, self.config.hidden).to(self.text.device)
        grown.weight.zero_()
        grown.weight[: self.ids.num_embeddings] = self.ids.weight
        self.ids = grown
        self.item_bias = nn.Parameter(torch.cat([self.item_bias, torch.zeros(len(text), device=self.text.device)]))


class SequenceRecommender(nn.Module):
    """User vector from a BERT over item vectors; scores for the whole catalog or given items."""

    def __init__(self, config: SequenceConfig, text: torch.Tensor, covisit: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.items = ItemTower(config, text)
        n_items = self.items.n_items
        self.bert = BertModel(
            BertConfig(
                vocab_size=1,  # items come in as inputs_embeds; the word table is unused
                hidden_size=config.hidden,
                num_hidden_layers=config.layers,
                num_attention_heads=config.heads,
                intermediate_size=config.intermediate,
                hidden_dropout_prob=config.dropout,
                attention_probs_dropout_prob=config.attention_dropout,
                max_position_embeddings=config.max_history + 1,
                type_vocab_size=len(EVENT_TYPES),
                is_decoder=config.masking == "causal",
                use_cache=False,
            ),
            add_pooling_layer=False,
        )
        self.mask_vector = nn.Parameter(torch.randn(config.hidden) * 0.02)
        unknown = set(config.signals) - set(SIGNALS)
        if unknown:
            raise ValueError(f"unknown signals {sorted(unknown)}; known: {SIGNALS}")
        k = len(config.signals)
        self.signal_weight = nn.Parameter(torch.ones(k))
        self.signal_gate = nn.Linear(config.hidden, k) if k else None
        if self.signal_gate is not None:
            nn.init.zeros_(self.signal_gate.weight)
            nn.init.zeros_(self.signal_gate.bias)
        needs_counts = bool(set(config.signals) & set(COVISIT_SIGNALS))
        if covisit is None:
            covisit = torch.zeros((n_items, n_items) if needs_counts else (0, 0))
        self.register_buffer("covisit", covisit.float())
        self.register_buffer("covisit_t", self.covisit.t().contiguous(), persistent=False)
        self._set_neighbours(*self._text_neighbours())

    def _text_neighbours(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(cosines, items) (N, k) of every item's nearest items by text, or empty without ``covisit_text``."""
        if "covisit_text" not in self.config.signals:
            return torch.zeros((0, 0)), torch.zeros((0, 0), dtype=torch.long)
        k = min(self.config.neighbours, max(self.n_items - 1, 1))
        return text_neighbours(self.items.text, k)

    def __deepcopy__(self, memo: dict) -> SequenceRecommender:
        """A copy with its own tensors (the trainer's challenger starts as a copy of the champion).

        torch cannot deep-copy a sparse CSR tensor (it has no single storage), so the module is
        copied without its neighbour kernel and the copy's kernel is cloned after."""
        kernel = self._buffers["neighbour_kernel_t"]
        self._buffers["neighbour_kernel_t"] = None
        try:
            clone = type(self).__new__(type(self))
            memo[id(self)] = clone
            clone.__setstate__(copy.deepcopy(self.__dict__, memo))
        finally:
            self._buffers["neighbour_kernel_t"] = kernel
        clone._buffers["neighbour_kernel_t"] = kernel.clone()
        return clone

    def _set_neighbours(self, cosines: torch.Tensor, index: torch.Tensor) -> None:
        """Keep the neighbour lists (to grow them) and the kernel built from them, transposed:
        ``K[i, j]`` spreads one unit of item i over its neighbours j (softmax of cosines), and
        ``combined @ K`` is computed as ``(Kᵀ @ combinedᵀ)ᵀ``, a sparse product of N·k entries."""
        self.register_buffer("neighbour_cosines", cosines, persistent=False)
        self.register_buffer("neighbour_index", index, persistent=False)
        self.register_buffer("neighbour_kernel_t", spread_kernel_t(cosines, index, self.config.neighbour_temperature),
                             persistent=False)

    @property
    def n_items(self) -> int:
        return self.items.n_items

    # -- the user side ---------------------------------------------------------------------

    def encode(self, items: torch.Tensor, types: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (B, L, H) of right-padded item sequences (``PAD``; ``MASK`` for cloze slots)."""
        real = items >= 0
        vectors, _ = self.items.vectors(items.clamp(min=0))
        vectors = torch.where((items == MASK).unsqueeze(-1), self.mask_vector.expand_as(vectors), vectors)
        vectors = vectors * (items != PAD).unsqueeze(-1)
        if types is None:
            types = torch.full_like(items, PURCHASE)
        types = torch.where(real, types, torch.zeros_like(types))
        attention = (items != PAD).long()
        return self.bert(inputs_embeds=vectors, attention_mask=attention, token_type_ids=types).last_hidden_state

    def user_vectors(self, histories: Sequence[Sequence[int]], types: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        """One vector per history: the state at its newest item (causal) or at an appended mask."""
        limit = self.config.max_history - (1 if self.config.masking == "cloze" else 0)
        cut = [list(h)[-limit:] for h in histories]
        cut_types = [list(t)[-limit:] for t in types] if types is not None else [[PURCHASE] * len(h) for h in cut]
        if self.config.masking == "cloze":
            cut = [h + [MASK] for h in cut]
            cut_types = [t + [PURCHASE] for t in cut_types]
        length = max(1, max(len(h) for h in cut))
        device = self.items.text.device
        items = torch.full((len(cut), length), PAD, dtype=torch.long, device=device)
        kinds = torch.zeros((len(cut), length), dtype=torch.long, device=device)
        for row, (h, t) in enumerate(zip(cut, cut_types)):
            if h:
                items[row, : len(h)] = torch.as_tensor(h, device=device)
                kinds[row, : len(t)] = torch.as_tensor(t, device=device)
        hidden = self.encode(items, kinds)
        last = torch.as_tensor([max(len(h) - 1, 0) for h in cut], device=device)
        return hidden[torch.arange(len(cut), device=device), last]

    # -- the signals -----------------------------------------------------------------------

    def covisit_signals(self, recent: torch.Tensor) -> torch.Tensor:
        """Raw co-visitation counts (M, 3, N) from recent items (M, R), newest first, ``PAD``-padded."""
        config = self.config
        valid = (recent >= 0).float()
        index = recent.clamp(min=0)
        newest = index[:, 0]
        forward = self.covisit[newest] * valid[:, :1]
        backward = self.covisit_t[newest] * valid[:, :1]
        older = torch.zeros_like(forward)
        for age in range(1, recent.shape[1]):
            both = self.covisit[index[:, age]] + config.covisit_backward * self.covisit_t[index[:, age]]
            older = older + (config.recency**age) * valid[:, age : age + 1] * both
        return torch.stack([forward, backward, older], dim=1)

    def text_signals(self, recent: torch.Tensor) -> torch.Tensor:
        """Text cosines (M, 3, N) of every item with the newest item, with the recent items' mean, and
        the most similar recent item."""
        valid = (recent >= 0).float()
        text = self.items.text[recent.clamp(min=0)] * valid.unsqueeze(-1)
        ages = torch.arange(recent.shape[1], device=recent.device, dtype=torch.float32)
        mean = (text * (self.config.recency**ages).view(1, -1, 1)).sum(dim=1)
        mean = nn.functional.normalize(mean, dim=-1)
        each = text @ self.items.text.t()  # (M, R, N)
        best = each.masked_fill(valid.unsqueeze(-1) == 0, -1.0).max(dim=1).values
        return torch.stack([each[:, 0], mean @ self.items.text.t(), best], dim=1)

    def signals(self, recent: torch.Tensor, covisit: torch.Tensor | None = None) -> torch.Tensor:
        """The configured signals (M, K, N); ``covisit`` overrides the counts (leave-one-out, fresh counts)."""
        parts: dict[str, torch.Tensor] = {}
        if set(self.config.signals) & set(COVISIT_SIGNALS):
            counts = (self.covisit_signals(recent) if covisit is None else covisit).clamp(min=0)
            for k, name in enumerate(COVISIT_SIGNALS):
                parts[name] = torch.log1p(counts[:, k])
            if "covisit_text" in self.config.signals:
                combined = counts[:, 0] + self.config.covisit_backward * counts[:, 1] + counts[:, 2]
                spread = (self.neighbour_kernel_t @ combined.t().to(self.neighbour_kernel_t.dtype)).t()
                parts["covisit_text"] = torch.log1p(spread.to(combined.dtype))
        if set(self.config.signals) & {"text_last", "text_recent", "text_max"}:
            text = self.text_signals(recent)
            parts["text_last"], parts["text_recent"], parts["text_max"] = text[:, 0], text[:, 1], text[:, 2]
        if not self.config.signals:
            return torch.zeros((recent.shape[0], 0, self.n_items), device=recent.device)
        return torch.stack([parts[name] for name in self.config.signals], dim=1)

    # -- scores ----------------------------------------------------------------------------

    def logits(self, users: torch.Tensor, signals: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (M, N) of the catalog, or (M, C) of ``items`` (M, C) when given."""
        if items is None:
            vectors, bias = self.items.catalog()
            scores = users @ vectors.t() + bias
        else:
            vectors, bias = self.items.vectors(items)
            scores = (vectors * users.unsqueeze(1)).sum(-1) + bias
            signals = signals.gather(2, items.unsqueeze(1).expand(-1, signals.shape[1], -1))
        if self.signal_gate is not None:
            weights = self.signal_weight + self.signal_gate(users)
            scores = scores + (weights.unsqueeze(-1) * signals).sum(dim=1)
        return scores

    @torch.no_grad()
    def score(
        self,
        histories: Sequence[Sequence[int]],
        *,
        types: Sequence[Sequence[int]] | None = None,
        candidates: torch.Tensor | None = None,
        batch: int = 256,
    ) -> torch.Tensor:
        """Scores of the whole catalog (B, N), or of ``candidates`` (B, C), for item histories."""
        was_training = self.training
        self.eval()
        out = []
        for start in range(0, len(histories), batch):
            chunk = histories[start : start + batch]
            users = self.user_vectors(chunk, None if types is None else types[start : start + batch])
            recent = recent_items(chunk, self.config.recent).to(users.device)
            signals = self.signals(recent)
            items = None if candidates is None else candidates[start : start + batch].to(users.device)
            out.append(self.logits(users, signals, items))
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros((0, self.n_items))

    @torch.no_grad()
    def add_items(self, text: torch.Tensor) -> None:
        """New catalog items known only by their text: rankable at once, no co-visits yet.

        The neighbour lists grow instead of being rebuilt: the new items' own lists, and each old
        item's list merged with its cosines to the new items (O(N · new) work, not O(N²))."""
        n_old = self.n_items
        self.items.add_items(text)
        if self.covisit.numel():
            n_new = self.n_items
            grown = torch.zeros((n_new, n_new), device=self.covisit.device)
            grown[:n_old, :n_old] = self.covisit
            self.covisit = grown
            self.covisit_t = grown.t().contiguous()
        if "covisit_text" not in self.config.signals:
            return
        k = min(self.config.neighbours, max(self.n_items - 1, 1))
        if n_old == 0 or self.neighbour_index.shape[1] != k:  # a tiny catalog: k itself grew
            self._set_neighbours(*self._text_neighbours())
            return
        self._set_neighbours(*grow_text_neighbours(self.items.text, n_old, self.neighbour_cosines, self.neighbour_index))


@dataclass
class Ensemble:
    """Members trained from different seeds; the ensemble's score is the mean of their log-softmax."""

    members: list[SequenceRecommender] = field(default_factory=list)

    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[int]], **kwargs) -> torch.Tensor:
        total = None
        for member in self.members:
            part = torch.log_softmax(member.score(histories, **kwargs), dim=-1)
            total = part if total is None else total + part
        assert total is not None, "an ensemble needs at least one member"
        return total / len(self.members)


def save_ensemble(ensemble: Ensemble, folder: Path) -> None:
    """``member-<n>.safetensors`` (weights, text embeddings, co-visitation counts) and ``sequence.json``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for n, member in enumerate(ensemble.members):
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in member.state_dict().items()}
        save_file(state, str(folder / f"member-{n}.safetensors"))
    configs = [member.config.to_dict() for member in ensemble.members]
    (folder / "sequence.json").write_text(json.dumps({"members": configs}, indent=2) + "\n")


def load_ensemble(folder: Path, *, device: str = "cpu") -> Ensemble:
    """The ensemble ``save_ensemble`` wrote, on ``device``, in eval mode (no network access)."""
    from safetensors.torch import load_file

    configs = json.loads((folder / "sequence.json").read_text())["members"]
    ensemble = Ensemble()
    for n, data in enumerate(configs):
        state = load_file(str(folder / f"member-{n}.safetensors"), device=device)
        model = SequenceRecommender(SequenceConfig.from_dict(data), state["items.text"], state["covisit"])
        model.load_state_dict(state)
        ensemble.members.append(model.to(device).eval())
    return ensemble
