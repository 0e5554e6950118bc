"""The gate: a challenger is published only if it is not worse than the champion on the newest events.

Both models rank the same candidate list for each held-out example (the newest slice by time,
never trained on): the item that really came next plus ``n - 1`` negatives, a third of them the
items most co-visited with the user's recent items (what a first stage would also propose) and
the rest drawn by popularity. Lists are drawn once with a fixed seed, so the two models face
identical questions. Metrics: NDCG@10 and HR@10 of the real item, and AUC (the share of
negatives it outscores, ties counted half). The challenger passes when on every metric it trails
the champion by at most ``tolerance``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

from streamrec.datasets.sequences import Example
from trainer.offline.baselines import CoVisitation, Popularity
from trainer.offline.evaluation import summarise
from trainer.offline.finetune import ContextWriter
from streamrec.model.networks import CrossEncoderScorer
from trainer.offline.recipe import score_lists

METRICS = ("ndcg10", "hr10", "auc")


def candidate_lists(
    examples: Sequence[Example], n_items: int, covisit: CoVisitation, popularity: Popularity, size: int, *, seed: int = 0
) -> list[list[int]]:
    """Per example ``[target, negatives...]`` (``size`` items at most; fewer if the universe is small)."""
    rng = np.random.default_rng(seed)
    weights = popularity.counts + 1.0
    lists = []
    for example in examples:
        blocked = {example.target, *example.history}
        group = [example.target]
        scores = covisit.scores(example.history)
        for item in np.argsort(-scores, kind="stable"):
            if len(group) >= 1 + (size - 1) // 3:
                break
            if int(item) not in blocked and scores[item] > covisit._tiebreak[item]:
                group.append(int(item))
        allowed = np.ones(n_items, dtype=bool)
        allowed[list(blocked | set(group))] = False
        pool = np.flatnonzero(allowed)
        take = min(size - len(group), pool.size)
        if take > 0:
            p = weights[pool] / weights[pool].sum()
            group.extend(int(i) for i in rng.choice(pool, size=take, replace=False, p=p))
        lists.append(group)
    return lists


def rank_metrics(score_rows: Sequence[np.ndarray]) -> dict[str, float]:
    """NDCG@10, HR@10 and AUC when the first score of each row is the real next item's."""
    ranks, aucs = [], []
    for scores in score_rows:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.size < 2:
            continue
        if not np.isfinite(scores).all():
            ranks.append(float("inf"))
            aucs.append(0.0)
            continue
        target, negatives = scores[0], scores[1:]
        ahead = np.count_nonzero(negatives > target)
        ties = np.count_nonzero(negatives == target)
        ranks.append(1.0 + ahead + ties)  # ties count against the model: a constant scorer ranks last
        aucs.append(float((np.count_nonzero(negatives < target) + 0.5 * ties) / negatives.size))
    summary = summarise(ranks)
    return {"ndcg10": summary["ndcg10"], "hr10": summary["hr10"], "auc": float(np.mean(aucs)) if aucs else 0.0,
            "examples": len(ranks)}


def evaluate(
    scorer: CrossEncoderScorer,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    lists: Sequence[Sequence[int]],
    item_texts: Sequence[str],
    titles: Sequence[str],
    *,
    max_length: int,
    context_budget: int = 40,
) -> dict[str, float]:
    contexts = ContextWriter(titles, tokenizer, context_budget)
    rows = score_lists(
        scorer, tokenizer, [contexts(e.history) for e in examples], [[item_texts[i] for i in group] for group in lists],
        max_length=max_length, precision="fp32",
    )
    return rank_metrics(rows)


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    challenger: dict[str, float]
    champion: dict[str, float]
    tolerance: float
    reasons: tuple[str, ...]

    def to_dict(self) -> dict:
        return {**asdict(self), "reasons": list(self.reasons)}


def decide(challenger: dict[str, float], champion: dict[str, float], tolerance: float) -> GateDecision:
    """Pass unless some metric trails the champion's by more than ``tolerance`` (or is not finite)."""
    reasons = []
    for name in METRICS:
        new, old = challenger.get(name, float("nan")), champion.get(name, float("nan"))
        if not np.isfinite(new):
            reasons.append(f"{name} is not finite")
        elif new < old - tolerance:
            reasons.append(f"{name} {new:.4f} < champion {old:.4f} - {tolerance}")
    return GateDecision(not reasons, dict(challenger), dict(champion), tolerance, tuple(reasons))
