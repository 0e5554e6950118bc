"""Train the sequence scorer on a dataset's user sequences and publish it as a ``bert_scorer`` version.

What ``streamrec trainer train-sequence`` (and so the quickstart) runs. The sequences are what
the replay sends: for Amazon Scientific each user's training sequence (the histories of
``Scientific.valid.inter``, whose targets are never replayed), for the event datasets each
user's interactions in time order. ``hold_back_last`` trains without each sequence's last item,
so those items can fit the blender (``streamrec trainer fit-blender``) on data the model did not
see. The schedule is fixed (``MODEL_TRAIN``, ``epochs`` = the count early stopping chose on the
held-back split of Amazon Scientific): no file that is later reported on steers it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamrec.model.artifacts import VersionMetadata, publish_sequence
from streamrec.model.sequence import CPU_CONFIG, Ensemble
from streamrec.model.served_sequence import ServedSequence
from trainer.offline.sequence_train import MODEL_TRAIN, train_model, text_vectors

Say = Callable[[str], None]
EPOCHS = 6
MAX_ITEMS = 20_000
"""The co-visitation counts and the text-neighbour kernel are dense (N x N): beyond this the
model needs their sparse form."""


@dataclass(frozen=True)
class SequenceData:
    item_ids: tuple[str, ...]
    texts: tuple[str, ...]
    sequences: tuple[tuple[int, ...], ...]  # rows into item_ids, oldest first


def amazon_sequences(data_dir: Path) -> SequenceData:
    from streamrec.datasets.amazon_pairs import FOLDER, VALID_FILE, load_catalog, load_examples

    catalog = load_catalog(data_dir)
    rows = load_examples(data_dir / FOLDER / VALID_FILE)
    return SequenceData(catalog.item_ids, catalog.texts, tuple(row.history for row in rows if row.history))


def event_sequences(name: str, data_dir: Path, limit: int | None = None) -> SequenceData:
    from streamrec.datasets.loaders import load
    from streamrec.model.texts import item_text

    dataset = load(name, data_dir)
    events = dataset.events[:limit] if limit else dataset.events
    by_user: dict[str, list[tuple[int, str]]] = {}
    for event in events:
        by_user.setdefault(event.user_id, []).append((event.time_ms, event.item_id))
    counts: dict[str, int] = {}
    for event in events:
        counts[event.item_id] = counts.get(event.item_id, 0) + 1
    known = {item.item_id: item for item in dataset.catalog}
    kept = [item for item in sorted(counts, key=counts.get, reverse=True) if item in known][:MAX_ITEMS]
    row = {item: n for n, item in enumerate(kept)}
    sequences = []
    for interactions in by_user.values():
        sequence = tuple(row[item] for _, item in sorted(interactions) if item in row)
        if len(sequence) >= 2:
            sequences.append(sequence)
    texts = tuple(item_text(known[i].title, known[i].category_path, known[i].brand) for i in kept)
    return SequenceData(tuple(kept), texts, tuple(sequences))


def dataset_sequences(name: str, data_dir: Path, limit: int | None = None) -> SequenceData:
    """The sequences the replay of ``name`` sends (its first ``limit`` events, as ``replay --limit``)."""
    if name == "amazon_scientific" and limit is None:
        return amazon_sequences(data_dir)
    return event_sequences(name, data_dir, limit)


def train_sequence(data: SequenceData, *, epochs: int = EPOCHS, seed: int = 0, hold_back_last: bool = False,
                   cache_dir: Path | None = None, say: Say = print) -> tuple[ServedSequence, dict]:
    from dataclasses import replace

    if len(data.item_ids) > MAX_ITEMS:
        raise ValueError(f"{len(data.item_ids):,} items: the dense co-visitation counts support at most {MAX_ITEMS:,}")
    say(f"embedding {len(data.texts):,} item texts with all-MiniLM-L6-v2")
    text = text_vectors(data.texts, cache_dir)
    sequences = [s[:-1] if hold_back_last else s for s in data.sequences]
    sequences = [s for s in sequences if s]
    say(f"training the sequence scorer on {len(sequences):,} user sequences, {epochs} epochs")
    model, report = train_model(sequences, text, CPU_CONFIG, replace(MODEL_TRAIN, seed=seed), epochs=epochs, say=say)
    lineage = {"trained": True, "epochs": report.epochs, "seconds": round(report.seconds, 1), "seed": seed,
               "sequences": len(sequences), "items": len(data.item_ids), "hold_back_last": hold_back_last,
               "config": CPU_CONFIG.to_dict()}
    return ServedSequence(Ensemble([model]), list(data.item_ids)), lineage


def publish_trained(repo: Path, model_name: str, served: ServedSequence, lineage: dict, base: str) -> Path:
    metadata = VersionMetadata(kind="sequence", base=base, max_length=served.max_history, lineage=lineage)
    return publish_sequence(repo, model_name, served, metadata)

