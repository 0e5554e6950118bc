"""Self-contained model version folders, written so Triton never sees half of one.

A version folder holds everything needed to serve it, and nothing pickled. The text models
(the item encoder and the cross-encoders):

    model.py              three lines importing the shared backend (streamrec.model.triton_backend)
    model.safetensors     the module's state dict
    config.json           the backbone's BertConfig
    tokenizer files       tokenizer.json, vocab.txt, ...
    metadata.json         kind, creation time, base, metrics, lineage

The sequence scorer (``bert_scorer``, kind ``sequence``) has ``sequence.json`` and
``member-<n>.safetensors`` in place of the weights, config and tokenizer, and ``items.json``
(see :mod:`streamrec.model.served_sequence`).

Versions are written into ``<repo>/.staging/`` first, checked, then renamed into
``<repo>/<model>/<N>``: a rename within one filesystem is atomic, and a folder
caught half-written (no ``model.py``) would otherwise wedge Triton for good.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerBase

from streamrec.model.networks import CrossEncoderScorer, TextEncoder

Kind = Literal["encoder", "scorer", "sequence"]
WEIGHTS = "model.safetensors"
METADATA = "metadata.json"
BACKEND_CLASS = {"encoder": "EncoderBackend", "scorer": "ScorerBackend", "sequence": "SequenceBackend"}
REQUIRED_FILES = ("model.py", WEIGHTS, "config.json", "tokenizer.json", METADATA)
SEQUENCE_FILES = ("model.py", "sequence.json", "member-0.safetensors", "items.json", METADATA)


def required_files(kind: str) -> tuple[str, ...]:
    return SEQUENCE_FILES if kind == "sequence" else REQUIRED_FILES


@dataclass
class VersionMetadata:
    kind: Kind
    base: str
    max_length: int = 128
    created_at: float = field(default_factory=time.time)
    metrics: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)


def build(kind: Kind, backbone: BertModel) -> TextEncoder | CrossEncoderScorer:
    return TextEncoder(backbone) if kind == "encoder" else CrossEncoderScorer(backbone)


def model_py(kind: Kind) -> str:
    cls = BACKEND_CLASS[kind]
    return (
        f'"""Triton entry point; the implementation is shared (streamrec.model.triton_backend)."""\n\n'
        f"from streamrec.model.triton_backend import {cls} as TritonPythonModel  # noqa: F401\n"
    )


def write_folder(
    folder: Path,
    module: TextEncoder | CrossEncoderScorer,
    tokenizer: PreTrainedTokenizerBase,
    metadata: VersionMetadata,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    os.chmod(folder / WEIGHTS, 0o644)  # Triton may run as another user than the trainer
    module.backbone.config.to_json_file(str(folder / "config.json"))
    tokenizer.save_pretrained(str(folder))
    (folder / METADATA).write_text(metadata.to_json())
    (folder / "model.py").write_text(model_py(metadata.kind))  # last: its presence marks completeness


def publish(
    repo: Path,
    model_name: str,
    module: TextEncoder | CrossEncoderScorer,
    tokenizer: PreTrainedTokenizerBase,
    metadata: VersionMetadata,
    version: int | None = None,
) -> Path:
    """Write a new version via staging and an atomic rename; returns its folder."""
    return publish_staged(repo, model_name, lambda folder: write_folder(folder, module, tokenizer, metadata),
                          load_folder, version)


def publish_staged(repo: Path, model_name: str, write: Callable[[Path], None], load: Callable[[Path], object],
                   version: int | None = None) -> Path:
    """``write(folder)`` into ``<repo>/.staging/``, ``load`` it back (refusing what cannot be
    loaded), then rename it whole into ``<repo>/<model>/<version>`` (no Triton involved)."""
    model_dir = repo / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = version or (max(versions(model_dir), default=0) + 1)
    target = model_dir / str(version)
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    staging = repo / ".staging" / f"{model_name}-{version}-{uuid.uuid4().hex[:8]}"
    try:
        write(staging)
        load(staging)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _complete(folder: Path) -> bool:
    try:
        kind = json.loads((folder / METADATA).read_text()).get("kind", "")
    except (OSError, ValueError, AttributeError):
        return False
    return all((folder / name).exists() for name in required_files(kind))


def versions(model_dir: Path) -> list[int]:
    """Complete versions only: numeric folders that have every file their kind requires."""
    if not model_dir.exists():
        return []
    return sorted(
        int(child.name) for child in model_dir.iterdir() if child.is_dir() and child.name.isdigit() and _complete(child)
    )


def read_metadata(folder: Path) -> VersionMetadata:
    return VersionMetadata(**json.loads((folder / METADATA).read_text()))


def load_folder(
    folder: Path, device: str | torch.device = "cpu"
) -> tuple[TextEncoder | CrossEncoderScorer, PreTrainedTokenizerBase, VersionMetadata]:
    """Load a version folder; raises a clear error for missing files or mismatched weights."""
    missing = [name for name in REQUIRED_FILES if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(f"{folder} is incomplete: missing {', '.join(missing)}")
    metadata = read_metadata(folder)
    config = BertConfig.from_json_file(str(folder / "config.json"))
    module = build(metadata.kind, BertModel(config, add_pooling_layer=False))
    state = load_file(str(folder / WEIGHTS))
    module.load_state_dict(state, strict=True)  # a missing or misshapen tensor is an error
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{folder}: weight {name} has non-finite values")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tokenizer.vocab_size != config.vocab_size:  # e.g. an empty fallback tokenizer would score garbage
        raise ValueError(f"{folder}: tokenizer has {tokenizer.vocab_size} tokens, the weights {config.vocab_size}")
    return module.to(device).eval(), tokenizer, metadata


def write_sequence_folder(folder: Path, served, metadata: VersionMetadata) -> None:
    """Write a :class:`~streamrec.model.served_sequence.ServedSequence` as a version folder."""
    from streamrec.model.served_sequence import write_version

    write_version(folder, served.ensemble, served.item_ids, metadata.to_json(), model_py("sequence"))


def publish_sequence(repo: Path, model_name: str, served, metadata: VersionMetadata, version: int | None = None) -> Path:
    """Write a sequence version via staging and an atomic rename (no Triton involved); returns its folder."""
    from streamrec.model.served_sequence import load_version

    return publish_staged(repo, model_name, lambda folder: write_sequence_folder(folder, served, metadata),
                          load_version, version)
