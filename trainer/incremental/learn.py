"""Warm-started fine-tuning of the champion's networks on the cycle's sequences, and fresh counts.

The challenger starts as a copy of the served version (with the cycle's new items appended: text
part from the catalog, ID part zero) and trains a small fixed number of epochs with the offline
recipe's loss (:func:`trainer.offline.sequence_train.batch_loss`: full softmax over the catalog at
every position, co-visitation counts with the user's own sequence left out). Before training, the
co-visitation counts the network reads are brought up to date with the cycle's new pairs, so the
signals it learns to weigh are the ones it will be served with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from streamrec.model.sequence import SequenceRecommender, covisit_counts
from trainer.offline.sequence_train import MODEL_TRAIN, train_epoch

Say = Callable[[str], None]


@dataclass(frozen=True)
class FineTune:
    epochs: int
    lr: float
    batch_size: int
    max_minutes: float
    seed: int = 0


@dataclass
class FineTuneReport:
    epochs: int = 0
    steps: int = 0
    sequences: int = 0
    seconds: float = 0.0
    first_loss: float = float("nan")
    last_loss: float = float("nan")
    stopped: str = "epochs"

    def to_dict(self) -> dict:
        return asdict(self)


def add_new_pairs(model: SequenceRecommender, sequences: Sequence[Sequence[int]], earlier: Sequence[int]) -> float:
    """Add to ``model.covisit`` the pairs of ``sequences`` not already counted: those ending after
    each sequence's first ``earlier[n]`` items (counted by the cycle that saw them). Returns the
    total weight added."""
    if not model.covisit.numel() or not sequences:
        return 0.0
    window = model.config.covisit_window
    full = covisit_counts(sequences, model.n_items, window=window)
    full -= covisit_counts([s[:k] for s, k in zip(sequences, earlier, strict=True)], model.n_items, window=window)
    added = torch.from_numpy(np.clip(full, 0.0, None)).to(model.covisit.device)
    model.covisit += added
    model.covisit_t = model.covisit.t().contiguous()
    return float(added.sum())


def fine_tune(model: SequenceRecommender, sequences: Sequence[Sequence[int]], config: FineTune, *,
              say: Say = lambda message: None) -> FineTuneReport:
    """Train ``model`` in place on ``sequences`` (item rows, oldest first); it ends in eval mode."""
    rows = [tuple(s) for s in sequences if len(s) >= 2]
    report = FineTuneReport(sequences=len(rows))
    if not rows:
        return report
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    train = replace(MODEL_TRAIN, lr=config.lr, batch_size=config.batch_size, seed=config.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=train.weight_decay)
    started = time.monotonic()
    model.train()
    try:
        for epoch in range(1, config.epochs + 1):
            losses = train_epoch(model, optimiser, rows, train, rng)
            if losses and not report.steps:
                report.first_loss = losses[0]
            report.steps += len(losses)
            report.last_loss = losses[-1] if losses else report.last_loss
            report.epochs = epoch
            if time.monotonic() - started > config.max_minutes * 60:
                report.stopped = "time"
                break
    finally:
        model.eval()
    report.seconds = round(time.monotonic() - started, 3)
    say(f"fine-tuned {report.epochs} epochs, {report.steps} steps on {len(rows)} sequences in {report.seconds:.1f} s "
        f"(loss {report.first_loss:.3f} -> {report.last_loss:.3f})")
    return report
