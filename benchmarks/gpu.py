"""The GPU configuration of the sequence scorer, measured in one short run on a lent GPU.

    python benchmarks/gpu.py --json OUT [--minutes 4] [--device cuda]

For a machine with a GPU but none of the services (no Kafka, Redis or Triton): everything is
in-process. On the Amazon Scientific protocol (``trainer.offline.sequence_eval``) it trains
``GPU_CONFIG`` (hidden 256, 4 layers, history 200) under bf16 autocast for a fixed number of
epochs, then reports

* quality: NDCG@10 / HR@10 / MRR@20 of the GPU model and of the CPU default trained the same
  way, against co-visitation (``gpu_over_covisit``, ``cpu_over_covisit``);
* compression: the CPU default distilled from the GPU model (KL to its catalog softmax plus the
  usual cross-entropy) and the quality it keeps (``distilled_kept``);
* speed: top-100 users/s over the catalog and 100-candidate users/s in bf16 at batch 256;
* a training cycle: seconds to fine-tune the GPU model for 2 epochs on the newest 10,000 events.

The script needs the repository (for the data loaders and the model) and the shared data folder;
``--device cpu --smoke`` runs a tiny version anywhere, for checking it before a GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamrec.datasets.amazon_pairs import FOLDER, TRAIN_FILE, VALID_FILE, load_catalog, load_examples  # noqa: E402
from streamrec.model.sequence import CPU_CONFIG, GPU_CONFIG, SequenceRecommender, recent_items  # noqa: E402
from streamrec.settings import REPO_ROOT  # noqa: E402
from trainer.offline.baselines import CoVisitation  # noqa: E402
from trainer.offline.sequence_eval import build_protocol, evaluate  # noqa: E402
from trainer.offline.sequence_train import (  # noqa: E402
    MODEL_TRAIN,
    batch_loss,
    make_batch,
    text_vectors,
    to_device,
    train_model,
)


def distil(teacher: SequenceRecommender, sequences, text, config, epochs: int, device, seed: int = 0) -> SequenceRecommender:
    """The CPU shape trained on the teacher's catalog softmax (KL, temperature 1) plus cross-entropy."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    student = SequenceRecommender(config, text, teacher.covisit.cpu()).to(device)
    optimiser = torch.optim.AdamW(student.parameters(), lr=MODEL_TRAIN.lr)
    rows = [tuple(s) for s in sequences if len(s) >= 2]
    teacher.eval()
    for _ in range(epochs):
        student.train()
        for start in range(0, len(rows), 128):
            chunk = [rows[i] for i in rng.permutation(len(rows))[start : start + 128]]
            batch = to_device(make_batch(chunk, config, rng), device)
            loss = batch_loss(student, batch, MODEL_TRAIN, None)
            with torch.no_grad():
                prefixes = [list(chunk[r][: int(a) + 1]) for r, a in zip(batch.rows.tolist(), batch.anchors.tolist())]
                target = torch.log_softmax(teacher.score(prefixes).to(device), dim=-1)
            users = student.user_vectors(prefixes)
            logits = student.logits(users, student.signals(recent_items(prefixes, config.recent).to(device)))
            kl = nn.functional.kl_div(torch.log_softmax(logits, -1), target, log_target=True, reduction="batchmean")
            optimiser.zero_grad(set_to_none=True)
            (loss + kl).backward()
            optimiser.step()
    return student.eval()


def users_per_s(model: SequenceRecommender, histories, *, candidates: bool, device, autocast: bool) -> float:
    batch = histories[:256]
    chosen = torch.randint(0, model.n_items, (len(batch), 100), device=device) if candidates else None
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        model.score(batch, candidates=chosen)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started, done = time.perf_counter(), 0
        while time.perf_counter() - started < 3:
            scores = model.score(batch, candidates=chosen)
            if not candidates:
                scores.topk(100, dim=1)
            done += len(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--smoke", action="store_true", help="Tiny shapes and one epoch: checks the script, measures nothing.")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    started = time.monotonic()
    facts = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__}
    print(facts, flush=True)
    folder = args.data_dir / FOLDER
    catalog = load_catalog(args.data_dir)
    protocol = build_protocol(load_examples(folder / TRAIN_FILE), load_examples(folder / VALID_FILE))
    split = protocol.evaluation
    rows, histories = split.rows, [row.history for row in split.rows]
    text = text_vectors(catalog.texts, REPO_ROOT / ".cache" / "text")
    gpu_config = replace(GPU_CONFIG, hidden=32, layers=1, intermediate=64) if args.smoke else GPU_CONFIG
    epochs = 1 if args.smoke else args.epochs
    metrics: dict[str, float] = {}
    covisit = evaluate(np.stack([CoVisitation(split.fit_sequences, len(catalog)).scores(h) for h in histories]), rows)["ndcg10"]
    metrics["ndcg10_covisit"] = covisit
    models = {}
    for name, config in (("gpu", gpu_config), ("cpu", CPU_CONFIG)):
        t = time.monotonic()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            model, _ = train_model(split.fit_sequences, text.to(device), config, MODEL_TRAIN, epochs=epochs, device=device)
        metrics[f"train_s_{name}"] = time.monotonic() - t
        quality = evaluate(model.score(histories).float().cpu().numpy(), rows)
        metrics.update({f"{key}_{name}": value for key, value in quality.items()})
        metrics[f"{name}_over_covisit"] = quality["ndcg10"] / covisit
        models[name] = model
        print(name, {k: round(v, 4) for k, v in metrics.items() if k.endswith(name)}, flush=True)
    student = distil(models["gpu"], split.fit_sequences, text.to(device), CPU_CONFIG, epochs, device)
    metrics["ndcg10_distilled"] = evaluate(student.score(histories).float().cpu().numpy(), rows)["ndcg10"]
    metrics["distilled_kept"] = metrics["ndcg10_distilled"] / metrics["ndcg10_gpu"]
    for name, model in models.items():
        metrics[f"topk_users_per_s_{name}"] = users_per_s(model, histories, candidates=False, device=device, autocast=device.type == "cuda")
        metrics[f"score100_users_per_s_{name}"] = users_per_s(model, histories, candidates=True, device=device, autocast=device.type == "cuda")
    newest = sorted(split.fit_sequences, key=len)[-max(1, 10_000 // 5):]
    t = time.monotonic()
    train_model(newest, text.to(device), gpu_config, MODEL_TRAIN, epochs=2, device=device)
    metrics["cycle_s_gpu_10k_events"] = time.monotonic() - t
    metrics["seconds_total"] = time.monotonic() - started
    print(json.dumps(metrics, indent=1), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"metrics": metrics, "machine": facts, "smoke": args.smoke}, indent=2))


if __name__ == "__main__":
    main()
