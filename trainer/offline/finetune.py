"""The fine-tuning recipe for the encoder and the cross-encoder scorer (reused by the trainer).

Examples are (history -> next item). The positive is the next item; negatives are

* **in-batch** — the other examples' positives in the same batch;
* **co-visited** — items often bought near the user's recent items (they look like a next item,
  so the model must read the text to rank the real one above them);
* **popular** — frequent items, so the model does not simply learn popularity.

Encoder: InfoNCE over the user-context embedding against every positive and hard negative in
the batch (temperature 0.05). Scorer: listwise softmax cross-entropy over each example's group
``[positive, negatives...]``. Both: AdamW (lr about 2e-5; weight decay 0.01, none on biases and LayerNorm; word
embeddings frozen), linear warm-up then linear decay, gradient clipping, bf16
autocast on CPU and GPU, early stopping on a validation metric with the best weights restored.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from streamrec.datasets.sequences import Example
from trainer.offline.baselines import CoVisitation, Popularity
from streamrec.model.inference import CachedTokenizer
from streamrec.model.networks import CrossEncoderScorer, TextEncoder
from streamrec.model.texts import user_context

Say = Callable[[str], None]


@dataclass
class FinetuneConfig:
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    batch_size: int = 16
    """Examples per step (the encoder's in-batch negatives are the other examples' positives)."""
    epochs: float = 1.0
    max_steps: int | None = None
    max_minutes: float | None = None
    """Wall-clock budget; the schedule is planned for the step count, training stops at the budget."""
    max_length: int = 64
    """Tokens per sequence (pair for the scorer) in training."""
    context_budget: int = 40
    """Tokens of the user context (recent titles, newest first)."""
    inbatch_negatives: int = 3
    """Scorer: other examples' positives per group (the encoder uses all of them)."""
    covisit_negatives: int = 2
    popular_negatives: int = 2
    retrieved_negatives: int = 0
    """Scorer: negatives from the first stage's top ``retrieved_pool`` (needs retrieval lists)."""
    covisit_pool: int = 20
    popular_pool: int = 200
    retrieved_pool: int = 30
    temperature: float = 0.05
    head_lr: float | None = None
    """Learning rate of the scorer's head; None: the same as ``lr``. (The head starts as a scaled
    cosine, see CrossEncoderScorer; with Adam at 1e-3 its [CLS] weights outgrew that start within
    100 steps and validation NDCG fell, so it trains at the backbone's rate.)"""
    freeze_word_embeddings: bool = True
    """Keep the 30k x hidden word-embedding table fixed: a third of MiniLM's weights, little to gain
    from a few epochs on one shop's text, and most of the optimiser's time on a CPU."""
    eval_every: int = 100
    patience: int = 3
    precision: Literal["fp32", "bf16"] = "bf16"
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainReport:
    steps: int = 0
    examples: int = 0
    seconds: float = 0.0
    best_step: int = 0
    best_metric: float = float("-inf")
    stopped: str = "schedule"
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class ContextWriter:
    """User contexts from histories: recent titles newest first within a token budget."""

    def __init__(self, titles: Sequence[str], tokenizer: PreTrainedTokenizerBase, budget: int) -> None:
        self.titles = titles
        self.budget = budget
        backend = CachedTokenizer(tokenizer, max_length=10_000)
        self._count = functools.lru_cache(maxsize=100_000)(lambda text: len(backend.ids([text])[0]))

    def __call__(self, history: Sequence[int], query: str | None = None) -> str:
        recent = [self.titles[i] for i in reversed(history)]
        return user_context(recent, query=query, count_tokens=self._count, token_budget=self.budget)


def example_key(example: Example) -> tuple[str, int]:
    """One training example per user and history length."""
    return example.user, len(example.history)


class NegativeSampler:
    """Hard negatives for one example: co-visited with its recent items, popular items and, when
    ``retrieved`` is given, the first stage's top candidates for it (what the scorer re-ranks)."""

    def __init__(
        self,
        covisit: CoVisitation,
        popularity: Popularity,
        config: FinetuneConfig,
        retrieved: Mapping[tuple[str, int], Sequence[int]] | None = None,
    ) -> None:
        self.covisit = covisit
        self.popular = popularity.top(config.popular_pool)
        self.config = config
        self.retrieved = retrieved or {}

    def hard(self, example: Example, rng: np.random.Generator) -> list[int]:
        blocked = {example.target, *example.history}
        scores = self.covisit.scores(example.history)
        scores[list(blocked)] = -np.inf
        pool = np.argsort(-scores)[: self.config.covisit_pool]
        pool = pool[np.isfinite(scores[pool])]
        chosen: list[int] = []
        if self.config.covisit_negatives and pool.size:
            take = min(self.config.covisit_negatives, pool.size)
            chosen.extend(int(i) for i in rng.choice(pool, size=take, replace=False))
        popular = [int(i) for i in self.popular if int(i) not in blocked and int(i) not in chosen]
        if self.config.popular_negatives and popular:
            take = min(self.config.popular_negatives, len(popular))
            chosen.extend(int(i) for i in rng.choice(popular, size=take, replace=False))
        retrieved = [int(i) for i in self.retrieved.get(example_key(example), ()) if int(i) not in blocked and int(i) not in chosen]
        if self.config.retrieved_negatives and retrieved:
            take = min(self.config.retrieved_negatives, len(retrieved))
            chosen.extend(int(i) for i in rng.choice(retrieved, size=take, replace=False))
        return chosen


def batches(examples: Sequence[Example], batch_size: int, rng: np.random.Generator) -> Iterator[list[Example]]:
    """Endless shuffled batches (a new order every epoch)."""
    while True:
        order = rng.permutation(len(examples))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [examples[i] for i in order[start : start + batch_size]]


def optimizer_and_schedule(
    module: nn.Module, config: FinetuneConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in module.named_parameters():
        if config.freeze_word_embeddings and name.endswith("word_embeddings.weight"):
            parameter.requires_grad_(False)
        if not parameter.requires_grad:
            continue
        no_decay = parameter.ndim < 2 or "LayerNorm" in name or name.endswith(".bias")
        is_head = name.startswith("head.")
        groups.setdefault((no_decay, is_head), []).append(parameter)
    optimizer = torch.optim.AdamW(
        [
            {
                "params": params,
                "weight_decay": 0.0 if no_decay else config.weight_decay,
                "lr": (config.head_lr or config.lr) if is_head else config.lr,
            }
            for (no_decay, is_head), params in groups.items()
        ],
        lr=config.lr,
    )
    plan = {"total": total_steps, "warmup": max(1, int(total_steps * config.warmup_ratio))}

    def factor(step: int) -> float:
        total, warmup = plan["total"], plan["warmup"]
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    schedule.plan = plan  # type: ignore[attr-defined] - train_loop shortens it to fit a time budget
    return optimizer, schedule


def planned_steps(n_examples: int, config: FinetuneConfig) -> int:
    steps = max(1, math.ceil(n_examples * config.epochs / config.batch_size))
    return min(steps, config.max_steps) if config.max_steps else steps


def train_loop(
    module: nn.Module,
    step_loss: Callable[[list[Example], np.random.Generator], torch.Tensor],
    examples: Sequence[Example],
    config: FinetuneConfig,
    *,
    validate: Callable[[], float] | None = None,
    say: Say = print,
    label: str = "train",
) -> TrainReport:
    """AdamW with warm-up/decay and early stopping; ``module`` ends with the best validated weights."""
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    total = planned_steps(len(examples), config)
    optimizer, schedule = optimizer_and_schedule(module, config, total)
    autocast = torch.autocast(
        "cuda" if next(module.parameters()).is_cuda else "cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16"
    )
    report = TrainReport()
    best_state: dict[str, torch.Tensor] | None = None
    bad_evals = 0
    started = time.monotonic()
    losses: list[float] = []

    eval_seconds: list[float] = []

    def evaluate() -> bool:
        """Returns True when training should stop (no improvement for ``patience`` evaluations)."""
        nonlocal best_state, bad_evals
        if validate is None:
            return False
        module.eval()
        began = time.monotonic()
        metric = validate()
        eval_seconds.append(time.monotonic() - began)
        module.train()
        entry = {"step": report.steps, "metric": metric, "loss": float(np.mean(losses[-config.eval_every :]) if losses else 0.0),
                 "seconds": round(time.monotonic() - started, 1)}
        report.history.append(entry)
        if metric > report.best_metric:
            report.best_metric, report.best_step, bad_evals = metric, report.steps, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in module.state_dict().items()})
            say(f"{label}: step {report.steps}/{total} loss {entry['loss']:.4f} val {metric:.4f} (best)")
        else:
            bad_evals += 1
            say(f"{label}: step {report.steps}/{total} loss {entry['loss']:.4f} val {metric:.4f} ({bad_evals}/{config.patience} without improvement)")
        return bad_evals >= config.patience

    evaluate()  # the starting point counts: fine-tuning must beat it to be kept
    module.train()
    for batch in batches(examples, min(config.batch_size, len(examples)), rng):
        if report.steps >= total:
            break
        if config.max_minutes is not None and time.monotonic() - started > config.max_minutes * 60:
            report.stopped = "time budget"
            break
        with autocast:
            loss = step_loss(batch, rng)
        loss.backward()
        nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        report.steps += 1
        report.examples += len(batch)
        if report.steps == 20 and config.max_minutes is not None:
            total = _fit_budget(report, total, config, time.monotonic() - started, eval_seconds)
            schedule.plan.update(total=total, warmup=max(1, int(total * config.warmup_ratio)))  # type: ignore[attr-defined]
        if validate is None and report.steps % config.eval_every == 0:
            say(f"{label}: step {report.steps}/{total} loss {np.mean(losses[-config.eval_every:]):.4f}")
        if validate is not None and report.steps % config.eval_every == 0 and evaluate():
            report.stopped = "early stopping"
            break
    else:  # pragma: no cover - batches() is endless
        pass
    if validate is not None and report.steps % config.eval_every != 0 and report.stopped != "early stopping":
        evaluate()
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _fit_budget(report: TrainReport, total: int, config: FinetuneConfig, elapsed: float, evals: list[float]) -> int:
    """Shorten the planned steps so warm-up and decay finish within ``max_minutes``."""
    assert config.max_minutes is not None
    eval_cost = (np.mean(evals) if evals else 0.0) / max(1, config.eval_every)
    per_step = (elapsed - sum(evals)) / report.steps + eval_cost
    fits = report.steps + int((config.max_minutes * 60 - elapsed) / max(per_step, 1e-6))
    return max(report.steps + 1, min(total, fits))


@dataclass
class TrainingTexts:
    """What the recipe needs from a dataset: item texts and titles by item index, and counts."""

    item_texts: Sequence[str]
    titles: Sequence[str]
    covisit: CoVisitation
    popularity: Popularity


def finetune_encoder(
    encoder: TextEncoder,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    data: TrainingTexts,
    config: FinetuneConfig,
    *,
    validate: Callable[[], float] | None = None,
    say: Say = print,
) -> TrainReport:
    """Contrastive fine-tuning: user context -> next item text, in-batch and hard negatives."""
    tokens = CachedTokenizer(tokenizer, config.max_length)
    contexts = ContextWriter(data.titles, tokenizer, config.context_budget)
    sampler = NegativeSampler(data.covisit, data.popularity, config)
    device = next(encoder.parameters()).device

    def step_loss(batch: list[Example], rng: np.random.Generator) -> torch.Tensor:
        queries = [contexts(example.history) for example in batch]
        candidates = [example.target for example in batch]
        for example in batch:
            candidates.extend(sampler.hard(example, rng))
        q = encoder(**{k: v.to(device) for k, v in tokens.texts(queries).items() if k != "token_type_ids"})
        c = encoder(**{k: v.to(device) for k, v in tokens.texts([data.item_texts[i] for i in candidates]).items() if k != "token_type_ids"})
        logits = (q.float() @ c.float().T) / config.temperature
        candidate_ids = torch.tensor(candidates, device=device)
        targets = torch.tensor([example.target for example in batch], device=device)
        same_item = candidate_ids.unsqueeze(0) == targets.unsqueeze(1)  # the positive itself, or a duplicate of it
        same_item[torch.arange(len(batch)), torch.arange(len(batch))] = False
        logits = logits.masked_fill(same_item, float("-inf"))
        return nn.functional.cross_entropy(logits, torch.arange(len(batch), device=device))

    return train_loop(encoder, step_loss, examples, config, validate=validate, say=say, label="encoder")


def scorer_groups(
    batch: list[Example], sampler: NegativeSampler, config: FinetuneConfig, rng: np.random.Generator
) -> list[list[int]]:
    """Per example: ``[positive, in-batch negatives..., hard negatives...]`` (no duplicates)."""
    groups = []
    positives = [example.target for example in batch]
    for index, example in enumerate(batch):
        blocked = {example.target, *example.history}
        others = list(dict.fromkeys(p for j, p in enumerate(positives) if j != index and p not in blocked))
        inbatch = list(rng.permutation(others)[: config.inbatch_negatives]) if others else []
        group = [example.target, *(int(i) for i in inbatch)]
        for item in sampler.hard(example, rng):
            if item not in group:
                group.append(item)
        groups.append(group)
    return groups


def finetune_scorer(
    scorer: CrossEncoderScorer,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    data: TrainingTexts,
    config: FinetuneConfig,
    *,
    retrieved: Mapping[tuple[str, int], Sequence[int]] | None = None,
    validate: Callable[[], float] | None = None,
    say: Say = print,
) -> TrainReport:
    """Listwise fine-tuning of the cross-encoder: the positive must win its group.

    ``retrieved`` maps :func:`example_key` to the first stage's candidates for that example; with
    ``retrieved_negatives`` set, some negatives come from there, the items the scorer will
    actually have to order at serving time.
    """
    tokens = CachedTokenizer(tokenizer, config.max_length)
    contexts = ContextWriter(data.titles, tokenizer, config.context_budget)
    sampler = NegativeSampler(data.covisit, data.popularity, config, retrieved)
    device = next(scorer.parameters()).device

    def step_loss(batch: list[Example], rng: np.random.Generator) -> torch.Tensor:
        groups = scorer_groups(batch, sampler, config, rng)
        pair_contexts, pair_items = [], []
        for example, group in zip(batch, groups):
            context = contexts(example.history)
            pair_contexts.extend([context] * len(group))
            pair_items.extend(data.item_texts[i] for i in group)
        logits = scorer(**{k: v.to(device) for k, v in tokens.pairs(pair_contexts, pair_items).items()}).float()
        width = max(len(group) for group in groups)
        table = torch.full((len(groups), width), float("-inf"), device=device)
        start = 0
        for row, group in enumerate(groups):
            table[row, : len(group)] = logits[start : start + len(group)]
            start += len(group)
        return nn.functional.cross_entropy(table, torch.zeros(len(groups), dtype=torch.long, device=device))

    return train_loop(scorer, step_loss, examples, config, validate=validate, say=say, label="scorer")
