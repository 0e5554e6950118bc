"""First versions of the models, built from the packaged pretrained MiniLM (or a tiny BERT for tests)."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from streamrec.model import contract
from streamrec.model.artifacts import VersionMetadata, build, publish, versions
from streamrec.model.networks import load_backbone, pretrained_minilm_path, tiny_bert_config


def init_item_encoder(repo: Path, *, tiny: bool = False) -> Path | None:
    """Publish ``item_encoder`` version 1 unless a complete version exists; returns the new folder."""
    if versions(repo / contract.ITEM_ENCODER):
        return None
    source = pretrained_minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    backbone = load_backbone(config=tiny_bert_config(tokenizer.vocab_size)) if tiny else load_backbone(source)
    metadata = VersionMetadata(kind="encoder", base="tiny-random-bert" if tiny else "all-MiniLM-L6-v2")
    return publish(repo, contract.ITEM_ENCODER, build("encoder", backbone), tokenizer, metadata, version=1)
