"""Training the sequence recommender (``streamrec.model.sequence``): batches, losses, selection, seeds.

* **Rows.** ``masking="causal"``: every position of a user's sequence predicts the next item
  (SASRec). ``"cloze"``: a share of the items is replaced by the mask token and predicted from
  both sides (BERT4Rec); the newest item is masked in half the rows, as it is at serving time.
* **Leave the user out.** The co-visitation counts a training row sees are the fitted counts
  minus that user's own pairs (:func:`own_covisit`): otherwise the count of (newest item ->
  target) includes the very pair being predicted, the network learns to trust co-visitation far
  more than it deserves for a user the counts have not seen, and every served user is such a
  user. Text signals need no such care (an item's text does not depend on who bought it).
* **Loss.** Full-softmax cross-entropy over the catalog at every predicted position (the
  default; Klenitskiy & Vasilev 2023). For catalogs too large for that, a sampled softmax with
  logQ correction (:func:`sampled_softmax_loss`; Bengio & Senécal 2008, Yi et al. 2019 for the
  correction, the positive kept out of the sampled sum as in Khrylchenko et al. 2025).
* **Selection.** :func:`select_epochs` trains on the protocol's held-back split (each fit
  sequence without its last item) and early-stops on NDCG@10 of those last items; :func:`fit`
  then trains each seed on the full fit sequences for that many epochs. The evaluation file's
  targets are never seen by either.
* **Ensembling.** :func:`fit_ensemble` trains members from different seeds and averages their
  log-softmax scores (``streamrec.model.sequence.Ensemble``). Measured on the Amazon valid
  split, 3 members add +0.005 NDCG@10 to an ID-only SASRec but only +0.0006 to this model (its
  members share the deterministic signals, so they disagree little): worth it for serving only
  where three forward passes are cheap; a wider network (hidden 128) lost on held-back data.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from streamrec.model.sequence import (
    PAD,
    MASK,
    Ensemble,
    SequenceConfig,
    SequenceRecommender,
    covisit_counts,
)
from trainer.offline.sequence_eval import Split, ndcg10

Say = Callable[[str], None]


@dataclass(frozen=True)
class TrainConfig:
    """The schedule; the network's shape is ``SequenceConfig``."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 10
    """Epochs without a better held-back NDCG@10 before selection stops."""
    loss: Literal["full", "sampled"] = "full"
    negatives: int = 256
    """Sampled loss only: negatives per batch, drawn from popularity ** ``proposal_power``."""
    proposal_power: float = 0.75
    leave_user_out: bool = True
    """Subtract each training row's own pairs from the co-visitation counts it sees (False: only
    for the ablation that shows why)."""
    max_minutes: float = 10.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


MODEL_TRAIN = TrainConfig(lr=5e-4)
"""The schedule of ``CPU_CONFIG``: on the held-back split 5e-4 beat 1e-3 by about 0.001 NDCG@10
in each of two runs (best at about 6 epochs rather than 3)."""


# -- losses -------------------------------------------------------------------------------------


def sampled_softmax_loss(
    positive: torch.Tensor, negative: torch.Tensor, log_q: torch.Tensor, hits: torch.Tensor | None = None
) -> torch.Tensor:
    """Sampled softmax with logQ correction, mean over rows.

    ``positive`` (M,) and ``negative`` (M, k) are logits; the k negatives were drawn with
    replacement from a proposal Q (``log_q``: log Q of each drawn item, (k,) or (M, k)).
    ``exp(s_n) / (k Q(n))`` summed over the draws is an unbiased estimate of the partition
    sum over the other items, so the loss approaches full-softmax cross-entropy as k grows;
    draws that are the row's positive (``hits``) are dropped, the positive counted once, exactly.
    """
    k = negative.shape[1]
    corrected = negative - (log_q + math.log(k))
    if hits is not None:
        corrected = corrected.masked_fill(hits, float("-inf"))
    logits = torch.cat([positive.unsqueeze(1), corrected], dim=1)
    return (torch.logsumexp(logits, dim=1) - positive).mean()


# -- leave-one-user-out co-visitation -------------------------------------------------------------


def own_covisit(sequences: torch.Tensor, rows: torch.Tensor, anchors: torch.Tensor, config: SequenceConfig,
                n_items: int) -> torch.Tensor:
    """The user's own share (M, 3, N) of the counts ``SequenceRecommender.covisit_signals`` reads.

    ``sequences`` (B, n) are the users' full fit sequences (``PAD``-padded), exactly as counted
    by ``covisit_counts``; prediction point m reads the counts at position ``anchors[m]`` (its
    newest history item; -1: none) of sequence ``rows[m]``. Position pairs are counted with
    (B, n, n) products, so items repeated in a sequence are handled like the counter does.
    """
    batch, n = sequences.shape
    device = sequences.device
    valid = sequences >= 0
    position = torch.arange(n, device=device)
    gap = (position.view(1, -1) - position.view(-1, 1)).float()  # gap[p, q] = q - p
    pair = torch.where((gap >= 1) & (gap <= config.covisit_window), 1.0 / gap.clamp(min=1), torch.zeros_like(gap))
    pair = pair.unsqueeze(0) * (valid.unsqueeze(2) & valid.unsqueeze(1)).float()
    pair = pair * (sequences.unsqueeze(2) != sequences.unsqueeze(1)).float()
    same = ((sequences.unsqueeze(2) == sequences.unsqueeze(1)) & valid.unsqueeze(2) & valid.unsqueeze(1)).float()
    forward = same @ pair  # [t, q]: own counts[s_t, s_q], spread over the positions q
    backward = same @ pair.transpose(1, 2)  # [t, p]: own counts[s_p, s_t]
    both = forward + config.covisit_backward * backward
    older = torch.zeros_like(both)
    for age in range(1, config.recent):
        if age < n:
            older[:, age:] += (config.recency**age) * both[:, :-age]
    has = anchors >= 0
    at = anchors.clamp(min=0)
    picked = torch.stack([forward[rows, at], backward[rows, at], older[rows, at]], dim=1) * has.view(-1, 1, 1).float()
    out = torch.zeros((len(rows), 3, n_items + 1), device=device)
    index = torch.where(valid[rows], sequences[rows], torch.full_like(sequences[rows], n_items))
    out.scatter_add_(2, index.unsqueeze(1).expand(-1, 3, -1), picked)
    return out[:, :, :n_items]


# -- batches ----------------------------------------------------------------------------------------


@dataclass
class Batch:
    inputs: torch.Tensor  # (B, L) items, PAD / MASK
    full: torch.Tensor  # (B, n) the users' fit sequences, PAD-padded
    rows: torch.Tensor  # (M,) prediction point -> batch row
    slots: torch.Tensor  # (M,) its input position (the user vector is read there)
    anchors: torch.Tensor  # (M,) its newest history item's position in ``full`` (-1: none)
    targets: torch.Tensor  # (M,)


def make_batch(sequences: Sequence[Sequence[int]], config: SequenceConfig, rng: np.random.Generator) -> Batch:
    limit = config.max_history + (1 if config.masking == "causal" else 0)
    full_length = max(len(s) for s in sequences)
    full = torch.full((len(sequences), full_length), PAD, dtype=torch.long)
    windows, offsets = [], []
    for b, sequence in enumerate(sequences):
        full[b, : len(sequence)] = torch.as_tensor(sequence)
        window = list(sequence[-limit:])
        windows.append(window)
        offsets.append(len(sequence) - len(window))
    points: list[tuple[int, int, int, int]] = []  # (row, slot, anchor, target)
    if config.masking == "causal":
        length = max(len(w) - 1 for w in windows)
        inputs = torch.full((len(sequences), max(length, 1)), PAD, dtype=torch.long)
        for b, (window, offset) in enumerate(zip(windows, offsets)):
            inputs[b, : len(window) - 1] = torch.as_tensor(window[:-1])
            points.extend((b, t, offset + t, window[t + 1]) for t in range(len(window) - 1))
    else:
        length = max(len(w) for w in windows)
        inputs = torch.full((len(sequences), length), PAD, dtype=torch.long)
        for b, (window, offset) in enumerate(zip(windows, offsets)):
            masked = rng.random(len(window)) < config.mask_prob
            masked[-1] = rng.random() < 0.5  # the newest item masked in half the rows, as served
            if not masked.any():
                masked[rng.integers(len(window))] = True
            tokens = [MASK if m else item for item, m in zip(window, masked)]
            inputs[b, : len(window)] = torch.as_tensor(tokens)
            points.extend((b, int(t), offset + int(t) - 1, window[t]) for t in np.flatnonzero(masked))
    rows, slots, anchors, targets = torch.as_tensor(points, dtype=torch.long).t()
    return Batch(inputs, full, rows, slots, anchors, targets)


def to_device(batch: Batch, device: str | torch.device) -> Batch:
    if torch.device(device).type == "cpu":
        return batch
    return Batch(*(tensor.to(device) for tensor in (batch.inputs, batch.full, batch.rows, batch.slots, batch.anchors,
                                                    batch.targets)))


def recent_at(full: torch.Tensor, rows: torch.Tensor, anchors: torch.Tensor, count: int) -> torch.Tensor:
    """Items at ``anchors``, ``anchors - 1``, ... of ``full[rows]`` (newest first), ``PAD`` before the start."""
    ages = torch.arange(count, device=anchors.device)
    position = anchors.view(-1, 1) - ages.view(1, -1)
    items = full[rows.view(-1, 1), position.clamp(min=0)]
    return torch.where(position >= 0, items, torch.full_like(items, PAD))


# -- training ----------------------------------------------------------------------------------------


@dataclass
class TrainReport:
    epochs: int
    seconds: float
    best_epoch: int | None = None
    best_selection_ndcg10: float | None = None
    curve: list[float] | None = None
    stopped: str = ""


def batch_loss(model: SequenceRecommender, batch: Batch, train: TrainConfig, log_q: torch.Tensor | None) -> torch.Tensor:
    config = model.config
    hidden = model.encode(batch.inputs)
    users = hidden[batch.rows, batch.slots]
    recent = recent_at(batch.full, batch.rows, batch.anchors, config.recent)
    counts = None
    if model.covisit.numel() and train.leave_user_out:
        counts = model.covisit_signals(recent) - own_covisit(batch.full, batch.rows, batch.anchors, config, model.n_items)
    signals = model.signals(recent, covisit=counts)
    if train.loss == "full":
        return nn.functional.cross_entropy(model.logits(users, signals), batch.targets)
    assert log_q is not None
    drawn = torch.multinomial(log_q.exp(), train.negatives, replacement=True)
    items = torch.cat([batch.targets.view(-1, 1), drawn.view(1, -1).expand(len(batch.targets), -1)], dim=1)
    scores = model.logits(users, signals, items)
    return sampled_softmax_loss(scores[:, 0], scores[:, 1:], log_q[drawn], hits=items[:, 1:] == batch.targets.view(-1, 1))


def train_epoch(model: SequenceRecommender, optimiser: torch.optim.Optimizer, sequences: Sequence[Sequence[int]],
                train: TrainConfig, rng: np.random.Generator, *, log_q: torch.Tensor | None = None,
                device: str | torch.device = "cpu") -> list[float]:
    """One pass over ``sequences`` in a random order, ``train.batch_size`` users a step; the losses."""
    losses = []
    order = rng.permutation(len(sequences))
    for start in range(0, len(order), train.batch_size):
        batch = to_device(make_batch([sequences[i] for i in order[start : start + train.batch_size]], model.config, rng),
                          device)
        loss = batch_loss(model, batch, train, log_q)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses


def train_model(
    fit_sequences: Sequence[Sequence[int]],
    text: torch.Tensor,
    config: SequenceConfig,
    train: TrainConfig,
    *,
    epochs: int | None = None,
    selection: Split | None = None,
    device: str | torch.device = "cpu",
    say: Say = lambda message: None,
) -> tuple[SequenceRecommender, TrainReport]:
    """Train on ``fit_sequences``: a fixed number of ``epochs``, or early-stopped on ``selection``.

    With ``selection`` (its rows' histories are prefixes of ``fit_sequences``), NDCG@10 of its
    rows is measured after every epoch and the best epoch's weights are returned.
    """
    torch.manual_seed(train.seed)
    rng = np.random.default_rng(train.seed)
    n_items = text.shape[0]
    sequences = [tuple(s) for s in fit_sequences if len(s) >= 2]
    covisit = None
    if set(config.signals) & {"covisit_next", "covisit_prev", "covisit_recent"}:
        covisit = torch.from_numpy(covisit_counts(fit_sequences, n_items, window=config.covisit_window))
    model = SequenceRecommender(config, text.cpu(), covisit).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    log_q = None
    if train.loss == "sampled":
        counts = np.bincount(np.concatenate([np.asarray(s) for s in sequences]), minlength=n_items) + 1.0
        proposal = counts**train.proposal_power
        log_q = torch.log(torch.as_tensor(proposal / proposal.sum(), dtype=torch.float32))
    limit = epochs if epochs is not None else train.max_epochs
    started = time.monotonic()
    best, best_epoch, best_state, curve, stopped = -1.0, 0, None, [], "epochs"
    epoch = 0
    for epoch in range(1, limit + 1):
        model.train()
        train_epoch(model, optimiser, sequences, train, rng, log_q=log_q, device=device)
        if selection is not None:
            value = ndcg10(model.score([row.history for row in selection.rows]).float().cpu().numpy(), selection.rows)
            curve.append(value)
            if value > best:
                best, best_epoch, best_state = value, epoch, copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= train.patience:
                stopped = "patience"
                break
        if time.monotonic() - started > train.max_minutes * 60:
            stopped = "time"
            break
    say(f"  trained {epoch} epochs in {time.monotonic() - started:.0f} s ({stopped})"
        + (f"; best held-back NDCG@10 {best:.4f} at epoch {best_epoch}" if selection is not None else ""))
    if best_state is not None:
        model.load_state_dict(best_state)
    report = TrainReport(epochs=epoch, seconds=time.monotonic() - started, stopped=stopped,
                         best_epoch=best_epoch if selection is not None else None,
                         best_selection_ndcg10=best if selection is not None else None,
                         curve=curve or None)
    return model.eval(), report


def select_epochs(selection: Split, text: torch.Tensor, config: SequenceConfig, train: TrainConfig,
                  say: Say = lambda message: None) -> TrainReport:
    """Early stopping on the held-back split: how many epochs the final fits train."""
    _, report = train_model(selection.fit_sequences, text, config, train, selection=selection, say=say)
    return report


def fit_ensemble(fit_sequences: Sequence[Sequence[int]], text: torch.Tensor, config: SequenceConfig,
                 train: TrainConfig, *, epochs: int, members: int, say: Say = lambda message: None
                 ) -> tuple[Ensemble, list[TrainReport]]:
    """``members`` networks from seeds ``train.seed``, ``train.seed + 1000``, ...; mean log-softmax."""
    ensemble, reports = Ensemble(), []
    for member in range(members):
        model, report = train_model(fit_sequences, text, config, replace(train, seed=train.seed + 1000 * member),
                                    epochs=epochs, say=say)
        ensemble.members.append(model)
        reports.append(report)
    return ensemble, reports


# -- the frozen text embeddings ---------------------------------------------------------------------


def text_vectors(texts: Sequence[str], cache_dir: Path | None = None, *, max_length: int = 128) -> torch.Tensor:
    """all-MiniLM-L6-v2 embeddings of the item texts (L2-normalised), cached by content.

    A cache folder that cannot be read or written (a broken link, a read-only disk) only costs
    the embedding time (about 20 s for 1,585 items on 2 cores), never the run.
    """
    key = hashlib.sha256(("\n".join(texts) + f"|{max_length}").encode()).hexdigest()[:16]
    path = cache_dir / f"minilm-{key}.npy" if cache_dir is not None else None
    try:
        if path is not None and path.exists():
            return torch.from_numpy(np.load(path))
    except OSError:
        path = None
    from transformers import AutoTokenizer

    from streamrec.model.networks import TextEncoder, load_backbone, pretrained_minilm_path
    from trainer.offline.recipe import embed

    tokenizer = AutoTokenizer.from_pretrained(pretrained_minilm_path(), local_files_only=True)
    encoder = TextEncoder(load_backbone(pretrained_minilm_path())).eval()
    vectors = embed(encoder, tokenizer, list(texts), max_length=max_length).astype(np.float32)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, vectors)
        except OSError:
            pass
    return torch.from_numpy(vectors)
