"""First versions of the models, built from the packaged pretrained MiniLM (or a tiny BERT for tests).

A first scorer version is the pretrained backbone with an untrained head, so that Triton has
something to load and the serving path can run end to end; trained versions come from
``streamrec trainer train-scorer`` (see :mod:`trainer.offline.recipe`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer

from streamrec.model import contract
from streamrec.model.artifacts import VersionMetadata, build, publish, versions
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
    """Publish version 1 of ``bert_scorer`` and ``bert_scorer_student`` where neither has a complete version."""
    missing = [name for name in contract.SCORER_MODELS if not versions(repo / name)]
    if not missing:
        return []
    teacher, student = first_scorers(tiny=tiny)
    base = "tiny-random-bert" if tiny else "all-MiniLM-L6-v2"
    modules = {
        contract.BERT_SCORER: (teacher, base),
        contract.BERT_SCORER_STUDENT: (student, f"projected from {base} (untrained)"),
    }
    tokenizer = _tokenizer()
    written = []
    for name in missing:
        module, source = modules[name]
        metadata = VersionMetadata(kind="scorer", base=source, lineage={"untrained_head": True})
        written.append(publish(repo, name, module, tokenizer, metadata, version=1))
    return written
