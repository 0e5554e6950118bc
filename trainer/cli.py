"""``streamrec trainer ...``: the incremental trainer (``run``, ``once``) and the offline jobs that
train the first scorer versions (``train-scorer``) and fit the signal blender (``fit-blender``)."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streamrec.preflight import check
from streamrec.settings import REPO_ROOT, Settings

console = Console(highlight=False)
trainer_app = typer.Typer(help="The incremental trainer: fine-tune the sequence scorer on new events, gate, republish.",
                          no_args_is_help=True)
UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_interval(text: str) -> float:
    """``90``, ``90s``, ``5m`` or ``1h`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r}: expected a positive duration like 90s, 5m or 1h")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def _settings(ctx: typer.Context) -> Settings:
    root = ctx.find_root()
    return root.obj if isinstance(root.obj, Settings) else Settings()


def _print(result) -> None:
    table = Table(title=f"trainer cycle: {result.status}")
    table.add_column("field")
    table.add_column("value")
    rows = {
        "champion": result.champion, "version": result.version, "events used": f"{result.events_used:,}",
        "unreadable (dead-lettered on publish)": result.unreadable, "duplicates left out": result.duplicates,
        "counts": json.dumps(result.counts), "duration": f"{result.duration_s:.1f} s",
        "timings": json.dumps(result.timings), "reason": result.reason or "-",
    }
    if result.gate:
        gate = result.gate
        rows["gate (NDCG@10, whole catalog)"] = (f"challenger {gate['challenger']:.4f} vs champion {gate['champion']:.4f}, "
                                                 f"SE {gate['se']:.4f}, {gate['rows']} rows")
    for name, value in rows.items():
        table.add_row(name, str(value))
    console.print(table)


def _cycle(settings: Settings):
    from trainer.incremental.cycle import run_cycle

    return run_cycle(settings, say=lambda message: console.print(f"[dim]·[/dim] {message}"))


@trainer_app.command()
def once(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the cycle's result as JSON.")] = False,
) -> None:
    """Run one cycle; exit 0 when it published or had nothing to do, 3 when the gate or Triton rejected it."""
    check(_settings(ctx), kafka=True, redis=True)
    result = _cycle(_settings(ctx))
    if as_json:
        print(json.dumps(result.to_dict(), default=str))
    else:
        _print(result)
    if result.status in ("rejected", "failed"):
        raise typer.Exit(3)


@trainer_app.command()
def run(
    ctx: typer.Context,
    interval: Annotated[str | None, typer.Option(help="Time between cycle starts, e.g. 5m (default: settings).")] = None,
) -> None:
    """Run cycles forever; SIGTERM lets the current cycle finish (publishes are never cut short)."""
    settings = _settings(ctx)
    check(settings, kafka=True, redis=True)
    seconds = parse_interval(interval) if interval else settings.trainer.interval_s
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    from trainer.metrics import TrainerMetrics

    metrics = TrainerMetrics()
    metrics.serve(settings.trainer.metrics_host, settings.trainer.metrics_port)
    console.print(f"trainer: {settings.trainer.model} every {seconds:.0f} s; "
                  f"metrics on http://{settings.trainer.metrics_host}:{settings.trainer.metrics_port}/metrics")
    while not stop.is_set():
        began = time.monotonic()
        try:
            result = _cycle(settings)
            _print(result)
            metrics.observe(result.status, result.champion, time.time(), unreadable=result.unreadable,
                            dead_lettered=result.dead_lettered)
        except Exception as error:  # noqa: BLE001 - a failed cycle must not end the service; the next one retries
            console.print(f"[red]cycle failed:[/red] {type(error).__name__}: {error}")
            metrics.observe("failed", None, time.time())
        stop.wait(max(0.0, seconds - (time.monotonic() - began)))


@trainer_app.command("train-scorer")
def model_train_scorer(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="Training data (amazon_scientific: the one with item text).")] = "amazon_scientific",
    data_dir: Annotated[Path, typer.Option(help="Folder with the shared datasets.")] = REPO_ROOT.parent / "shared" / "data",
    out: Annotated[Path, typer.Option(help="Model repository the trained versions (and the training report) are written to.")] = REPO_ROOT / "bench-out" / "models",
    publish: Annotated[bool, typer.Option(help="Write into the configured model repository (Triton's) instead of --out.")] = False,
    encoder_minutes: Annotated[float, typer.Option(help="Time budget of encoder fine-tuning.")] = 20.0,
    scorer_minutes: Annotated[float, typer.Option(help="Time budget of scorer (teacher) fine-tuning.")] = 40.0,
    student_minutes: Annotated[float, typer.Option(help="Time budget of student distillation.")] = 10.0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
    stages: Annotated[str, typer.Option(help="Comma-separated: encoder,scorer,student; a stage left out starts from the newest version in the repository.")] = "encoder,scorer,student",
) -> None:
    """Fine-tune the item encoder and the scorer on real shop data, distil the CPU student; write new versions.

    The recipe (trainer.offline.recipe) trains on the training split and early-stops on the
    validation split; each model becomes a self-contained version folder written atomically.
    """
    import time

    import torch

    from trainer.offline.recipe import Plan, train_models

    if dataset != "amazon_scientific":
        console.print(f"[red]error:[/red] {dataset} has no item text; the scorer trains on amazon_scientific")
        raise typer.Exit(2)
    from trainer.offline.recipe import load_corpus

    torch.set_num_threads(threads)
    plan = Plan()
    plan.encoder.max_minutes, plan.scorer.max_minutes, plan.distill.max_minutes = (
        encoder_minutes, scorer_minutes, student_minutes)
    repo = _settings(ctx).model_repo if publish else out
    trained = train_models(load_corpus(data_dir), repo, plan, say=console.print, lineage={"dataset": dataset},
                           stages=[stage.strip() for stage in stages.split(",") if stage.strip()])
    out.mkdir(parents=True, exist_ok=True)  # the report stays out of Triton's repository
    report = out / f"train-report-{int(time.time())}.json"
    report.write_text(json.dumps(trained.reports, indent=2, default=str))
    console.print(f"encoder {trained.encoder}\nscorer {trained.scorer}\nstudent {trained.student}\nreport {report}")


@trainer_app.command("train-sequence")
def train_sequence_command(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="amazon_scientific, diginetica or yoochoose: the sequences it replays.")] = "amazon_scientific",
    data_dir: Annotated[Path, typer.Option(help="Shared data folder.")] = REPO_ROOT.parent / "shared" / "data",
    limit: Annotated[int | None, typer.Option(help="Train on the dataset's first events only (as `quickstart --limit` replays).")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs (the default is what early stopping chose on held-back data).")] = 6,
    seed: Annotated[int, typer.Option(help="Seed of the initialisation and batch order.")] = 0,
    hold_back_last: Annotated[bool, typer.Option(help="Train without each sequence's last item (to fit the blender on them).")] = False,
    threads: Annotated[int, typer.Option(min=1, help="Torch CPU threads.")] = 2,
    out: Annotated[Path | None, typer.Option(help="Model repository to publish into (default: the configured one, for Triton).")] = None,
) -> None:
    """Train the sequence scorer (CPU default) on a dataset and publish it as a new bert_scorer version."""
    import torch

    from streamrec.model import contract
    from trainer.offline.sequence_job import dataset_sequences, publish_trained, train_sequence

    torch.set_num_threads(threads)
    settings = _settings(ctx)
    started = time.monotonic()
    data = dataset_sequences(dataset, data_dir, limit)
    served, lineage = train_sequence(data, epochs=epochs, seed=seed, hold_back_last=hold_back_last,
                                     cache_dir=settings.stack.cache_dir / "text", say=console.print)
    repo = out or settings.model_repo
    folder = publish_trained(repo, contract.BERT_SCORER, served, {**lineage, "dataset": dataset, "limit": limit},
                             base=f"trained on {dataset}")
    console.print(f"published {folder} ({time.monotonic() - started:.0f} s)")


@trainer_app.command("fit-blender")
def fit_blender_command(
    ctx: typer.Context,
    scorer: Annotated[Path, typer.Argument(help="A bert_scorer version folder trained with --hold-back-last.")],
    data_dir: Annotated[Path, typer.Option(help="Shared data folder (amazon_scientific inside).")] = REPO_ROOT.parent
    / "shared"
    / "data",
    rows: Annotated[int, typer.Option(min=1, help="Rows (history -> next item) of Scientific.valid.inter sampled for the fit.")] = 3000,
    rounds: Annotated[int, typer.Option(min=1, help="Fits; each re-selects the diversity pool with the last weights.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the row sample.")] = 0,
    threads: Annotated[int, typer.Option(min=1, help="Torch CPU threads.")] = 2,
    out: Annotated[Path | None, typer.Option(help="Where to write the weights (default: the packaged file).")] = None,
) -> None:
    """Fit the signal blender on held-back Amazon Scientific rows and write its weights."""
    import torch

    from streamrec.ranking.blender import PACKAGED_WEIGHTS
    from trainer.offline.blender_fit import fit_blender

    torch.set_num_threads(threads)
    settings = _settings(ctx)
    blender = fit_blender(data_dir, scorer, rows=rows, seed=seed, rounds=rounds, recs=settings.recs,
                          streams=settings.streams, cache_dir=settings.stack.cache_dir / "text", say=typer.echo)
    target = out or PACKAGED_WEIGHTS
    blender.save(target)
    typer.echo(f"wrote {target}")


eval_app = typer.Typer(help="Evaluation: how good the lists are, measured offline on held-out data.", no_args_is_help=True)


@eval_app.command("offline")
def eval_offline(
    dataset: Annotated[str, typer.Option(help="amazon_scientific: the dataset with a standard evaluation split and item text.")] = "amazon_scientific",
    data_dir: Annotated[Path, typer.Option(help="Shared data folder.")] = REPO_ROOT.parent / "shared" / "data",
    eval_file: Annotated[Path | None, typer.Option(help="Rows to evaluate (default: the dataset's validation file).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for offline-report.html and offline-report.json (default: reports/offline).")] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated: popularity, covisit, text_similarity, scorer.")] = "popularity,covisit,text_similarity,scorer",
    scorer_epochs: Annotated[int | None, typer.Option(min=1, help="Train the scorer this many epochs (default: chosen on the held-back split).")] = None,
    max_epochs: Annotated[int, typer.Option(min=1, help="Most epochs the held-back selection tries.")] = 30,
    seed: Annotated[int, typer.Option(help="Seed of the scorer and of the bootstrap.")] = 0,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples per interval.")] = 2000,
    rows: Annotated[int | None, typer.Option(min=2, help="Evaluate only the file's first N rows (a quick look; fit is unchanged).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 2,
) -> None:
    """Rank the whole catalog with each method on every row of an evaluation file and write an HTML
    report (with plots) and its JSON: accuracy, coverage, diversity, novelty, popularity bias, by
    segment, with bootstrap intervals and paired tests against the best baseline."""
    import os
    from datetime import UTC, datetime

    import torch

    from streamrec.datasets.amazon_pairs import FOLDER, TRAIN_FILE, VALID_FILE, load_catalog, load_examples
    from streamrec.datasets.loaders import DatasetMissing
    from streamrec.model.precision import FLAGS_THAT_MATTER, cpu_facts
    from trainer.offline.offline_report import build_report, default_output, flat_metrics
    from trainer.offline.report_html import render
    from trainer.offline.sequence_eval import build_protocol
    from trainer.offline.sequence_train import text_vectors

    if dataset != FOLDER:
        raise typer.BadParameter(f"{dataset!r}: only {FOLDER} has an evaluation split with item text here "
                                 "(diginetica and yoochoose are replayed, not split)", param_hint="--dataset")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)
    try:
        catalog = load_catalog(data_dir)
        train_rows = load_examples(data_dir / FOLDER / TRAIN_FILE)
        evaluation = load_examples(eval_file or data_dir / FOLDER / VALID_FILE)
    except (DatasetMissing, FileNotFoundError) as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from error
    protocol = build_protocol(train_rows, evaluation)
    console.print(f"{len(catalog):,} items; {len(evaluation):,} rows in {(eval_file or Path(VALID_FILE)).name}; "
                  f"methods {methods}")
    text = text_vectors(catalog.texts, REPO_ROOT / ".cache" / "text")
    cpu, flags = cpu_facts()
    started = time.monotonic()
    report = build_report(protocol, text, {row.user for row in train_rows}, methods=[m.strip() for m in methods.split(",") if m.strip()],
                          scorer_epochs=scorer_epochs, max_epochs=max_epochs, seed=seed, resamples=resamples,
                          row_limit=rows, say=console.print)
    report.update(dataset=dataset, eval_file=str(eval_file or data_dir / FOLDER / VALID_FILE),
                  date=datetime.now(UTC).isoformat(timespec="seconds"), seconds=round(time.monotonic() - started, 1),
                  machine={"cpu": cpu, "cpu_flags": " ".join(f for f in FLAGS_THAT_MATTER if f in flags), "threads": threads})
    folder = out or default_output(REPO_ROOT)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "offline-report.json").write_text(json.dumps({"metrics": flat_metrics(report), "report": report}, indent=2))
    (folder / "offline-report.html").write_text(render(report))
    table = Table(title=f"{report['rows']:,} rows, {report['items']:,} items (best baseline {report['best_baseline']})")
    for column in ("method", "NDCG@10", "95 % CI", "HR@10", "coverage", "diversity", "vs best baseline (p)"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, method in report["methods"].items():
        summary, (low, high) = method["summary"], method["intervals"]["ndcg10"]
        comparison = report["comparisons"].get(name, {}).get("ndcg10")
        versus = f"{comparison['difference']:+.4f} ({comparison['p_value']:.2g})" if comparison else "baseline"
        table.add_row(name, f"{summary['ndcg10']:.4f}", f"[{low:.4f}, {high:.4f}]", f"{summary['hr10']:.4f}",
                      f"{summary['coverage']:.3f}", f"{summary['diversity']:.3f}", versus)
    console.print(table)
    console.print(f"wrote {folder / 'offline-report.html'} and {folder / 'offline-report.json'}")
