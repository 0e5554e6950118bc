"""First versions of the models, built from the packaged pretrained MiniLM (or a tiny BERT for tests).

A first cross-encoder version is the pretrained backbone with an untrained head, so that Triton
has something to load; trained versions come from ``streamrec trainer train-scorer``. A first
``bert_scorer`` (sequence) version without training is not noise: its network starts at zero
item IDs and unit signal weights, so it ranks by co-visitation counts and text similarity until
``streamrec trainer train-sequence`` (which the quickstart runs) trains it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer

from streamrec.model import contract
from collections.abc import Sequence

import numpy as np

from streamrec.model.artifacts import VersionMetadata, build, publish, publish_sequence, versions
from streamrec.model.networks import (
    CrossEncoderScorer,
    StudentShape,
    init_student,
    load_backbone,
    pretrained_minilm_path,
    tiny_bert_config,
)

TINY_STUDENT = StudentShape(layers=2, hidden=16, heads=2, intermediate=32)


def _tokenizer():
    return AutoTokenizer.from_pretrained(str(pretrained_minilm_path()), local_files_only=True)


def init_item_encoder(repo: Path, *, tiny: bool = False) -> Path | None:
    """Publish ``item_encoder`` version 1 unless a complete version exists; returns the new folder."""
    if versions(repo / contract.ITEM_ENCODER):
        return None
    tokenizer = _tokenizer()
    backbone = load_backbone(config=tiny_bert_config(tokenizer.vocab_size)) if tiny else load_backbone()
    metadata = VersionMetadata(kind="encoder", base="tiny-random-bert" if tiny else "all-MiniLM-L6-v2")
    return publish(repo, contract.ITEM_ENCODER, build("encoder", backbone), tokenizer, metadata, version=1)


def first_scorers(*, tiny: bool = False, max_length: int = 128) -> tuple[CrossEncoderScorer, CrossEncoderScorer]:
    """An untrained teacher (pretrained or tiny backbone, fresh head) and a student projected from it."""
    tokenizer = _tokenizer()
    backbone = load_backbone(config=tiny_bert_config(tokenizer.vocab_size)) if tiny else load_backbone()
    torch.manual_seed(0)
    teacher = CrossEncoderScorer(backbone).eval()
    student = init_student(teacher, TINY_STUDENT if tiny else StudentShape()).eval()
    return teacher, student


def init_scorers(repo: Path, *, tiny: bool = False) -> list[Path]:
    """Publish version 1 of ``cross_encoder`` and ``cross_encoder_student`` where neither has a complete version."""
    missing = [name for name in contract.CROSS_ENCODERS if not versions(repo / name)]
    if not missing:
        return []
    teacher, student = first_scorers(tiny=tiny)
    base = "tiny-random-bert" if tiny else "all-MiniLM-L6-v2"
    modules = {
        contract.CROSS_ENCODER: (teacher, base),
        contract.CROSS_ENCODER_STUDENT: (student, f"projected from {base} (untrained)"),
    }
    tokenizer = _tokenizer()
    written = []
    for name in missing:
        module, source = modules[name]
        metadata = VersionMetadata(kind="scorer", base=source, lineage={"untrained_head": True})
        written.append(publish(repo, name, module, tokenizer, metadata, version=1))
    return written


def first_sequence_model(item_ids: Sequence[str], text: np.ndarray, sequences: Sequence[Sequence[str]], *,
                         tiny: bool = False):
    """An untrained sequence scorer over ``item_ids`` (text embeddings ``text``), with co-visitation
    counted from ``sequences`` (item ids, oldest first)."""
    from dataclasses import replace

    from streamrec.model.sequence import CPU_CONFIG, Ensemble, SequenceRecommender, covisit_counts
    from streamrec.model.served_sequence import ServedSequence

    config = replace(CPU_CONFIG, hidden=16, intermediate=32) if tiny else CPU_CONFIG
    position = {item_id: row for row, item_id in enumerate(item_ids)}
    rows = [[position[item] for item in sequence if item in position] for sequence in sequences]
    counts = torch.from_numpy(covisit_counts(rows, len(item_ids), window=config.covisit_window))
    torch.manual_seed(0)
    model = SequenceRecommender(config, torch.as_tensor(np.asarray(text, np.float32)), counts).eval()
    return ServedSequence(Ensemble([model]), list(item_ids))


def init_sequence_scorer(repo: Path, item_ids: Sequence[str], text: np.ndarray, sequences: Sequence[Sequence[str]], *,
                         tiny: bool = False) -> Path | None:
    """Publish ``bert_scorer`` version 1 (untrained) unless a complete version exists."""
    if versions(repo / contract.BERT_SCORER):
        return None
    served = first_sequence_model(item_ids, text, sequences, tiny=tiny)
    metadata = VersionMetadata(kind="sequence", base="untrained (co-visitation + text signals)",
                               max_length=served.max_history, lineage={"untrained": True, "items": len(item_ids)})
    return publish_sequence(repo, contract.BERT_SCORER, served, metadata, version=1)
