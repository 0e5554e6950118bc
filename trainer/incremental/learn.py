"""Warm-started fine-tuning of the champion on the cycle's examples (optionally LoRA).

The challenger starts as a copy of the served version's weights and trains with the scorer
recipe (:func:`trainer.offline.finetune.finetune_scorer`: listwise loss over the positive,
in-batch, co-visited and popular negatives). With ``lora`` only low-rank adapters on the
attention projections (``peft``) and the head train; they are merged back into plain weights
afterwards, so a LoRA version is served exactly like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streamrec.datasets.sequences import Example
from trainer.offline.finetune import FinetuneConfig, Say, TrainingTexts, TrainReport, finetune_scorer
from streamrec.model.networks import CrossEncoderScorer


@dataclass(frozen=True)
class LearnConfig:
    steps: int
    max_minutes: float
    batch_size: int
    lr: float
    max_length: int
    lora: bool = False
    lora_rank: int = 8
    seed: int = 0


def _with_lora(scorer: CrossEncoderScorer, rank: int):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=["query", "value"], bias="none")
    scorer.backbone = get_peft_model(scorer.backbone, config)  # freezes the backbone, adds adapters
    return scorer


def _merge_lora(scorer: CrossEncoderScorer) -> CrossEncoderScorer:
    scorer.backbone = scorer.backbone.merge_and_unload()
    for parameter in scorer.parameters():
        parameter.requires_grad_(True)
    return scorer


def train_challenger(
    scorer: CrossEncoderScorer,
    tokenizer,
    examples: Sequence[Example],
    data: TrainingTexts,
    config: LearnConfig,
    *,
    say: Say = print,
) -> TrainReport:
    """Fine-tune ``scorer`` in place (it ends in eval mode with plain, servable weights)."""
    recipe = FinetuneConfig(
        lr=config.lr,
        batch_size=config.batch_size,
        epochs=1.0,
        max_steps=config.steps,
        max_minutes=config.max_minutes,
        max_length=config.max_length,
        inbatch_negatives=3,
        covisit_negatives=2,
        popular_negatives=2,
        eval_every=max(50, config.steps),
        precision="fp32",  # bf16 autocast is slower than fp32 on CPUs without native bf16
        seed=config.seed,
    )
    if config.lora:
        _with_lora(scorer, config.lora_rank)
    scorer.train()
    try:
        report = finetune_scorer(scorer, tokenizer, examples, data, recipe, say=say)
    finally:
        if config.lora:
            _merge_lora(scorer)
        scorer.eval()
    return report
