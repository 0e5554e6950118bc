"""``streamrec experiments create/list/stop/report``: the operator's side of experiments."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streamrec.experiments.definition import RANKINGS, Experiment, Variant
from streamrec.experiments.store import ExperimentError, ExperimentStore
from streamrec.store.connection import connect

if TYPE_CHECKING:
    from streamrec.experiments.report import ExperimentReport

console = Console(highlight=False)
experiments_app = typer.Typer(help="A/B and interleaving experiments between ranking variants.", no_args_is_help=True)


def _run(ctx: typer.Context, work):
    async def go():
        client = connect(ctx.obj.redis)
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def parse_variant(text: str, *, default_share: float | None) -> Variant:
    """``name=ranking[@version][:share]``, e.g. ``bert=full:0.5`` or ``v7=full@7:0.5``."""
    name, sep, rest = text.partition("=")
    if not sep:
        raise typer.BadParameter(f"{text!r}: expected name=ranking[@version][:share], rankings: {', '.join(RANKINGS)}")
    ranking, _, share = rest.partition(":")
    ranking, _, version = ranking.partition("@")
    try:
        return Variant(name=name, ranking=ranking, share=float(share) if share else (default_share or 0.0),
                       model_version=int(version) if version else None)
    except (ValidationError, ValueError) as error:
        raise typer.BadParameter(f"{text!r}: {error}") from None


@experiments_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", help="The experiment's name.")] = None,
    variants: Annotated[list[str] | None, typer.Option(
        "--variant", help="name=ranking[@model version][:share], the control first; rankings: " + ", ".join(RANKINGS)
        + "; e.g. new=full@7:0.5 pins bert_scorer version 7 (repeat).")] = None,
    kind: Annotated[Literal["ab", "interleaving"], typer.Option("--kind", help="ab splits users; interleaving mixes two rankers in one list.")] = "ab",
    salt: Annotated[str | None, typer.Option("--salt", help="Assignment salt (default: a random one).")] = None,
    description: Annotated[str, typer.Option("--description", help="What it tests and why.")] = "",
    from_file: Annotated[Path | None, typer.Option("--file", help="A JSON definition instead of the options.", exists=True)] = None,
) -> None:
    """Start an experiment (one at a time); workers and the API follow within a few seconds."""
    try:
        if from_file is not None:
            experiment = Experiment.model_validate_json(from_file.read_text())
        else:
            if name is None or not variants:
                raise typer.BadParameter("give --name and at least two --variant (or --file)")
            share = 1.0 / len(variants)
            experiment = Experiment(name=name, kind=kind, salt=salt or uuid.uuid4().hex, description=description,
                                    variants=[parse_variant(text, default_share=share) for text in variants])
    except ValidationError as error:
        console.print(f"[red]error:[/red] invalid experiment: {escape(str(error))}")
        raise typer.Exit(2) from None
    try:
        created = _run(ctx, lambda client: ExperimentStore(client).create(experiment))
    except ExperimentError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    console.print(f"started [bold]{created.name}[/bold] ({created.kind}): "
                  + ", ".join(f"{v.name}={v.ranking}" + (f"@{v.model_version}" if v.model_version else "")
                              + (f" {v.share:.0%}" if created.kind == "ab" else "") for v in created.variants))


@experiments_app.command("list")
def list_(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Every experiment, running or stopped."""
    found = _run(ctx, lambda client: ExperimentStore(client).all())
    if as_json:
        print(json.dumps([experiment.model_dump() for experiment in found], indent=2))
        return
    table = Table(title="experiments")
    for column in ("name", "kind", "status", "version", "variants", "salt"):
        table.add_column(column)
    for experiment in found:
        table.add_row(experiment.name, experiment.kind, experiment.status, str(experiment.version),
                      " ".join(f"{v.name}={v.ranking}" + (f"@{v.model_version}" if v.model_version else "") + f":{v.share:g}"
                               for v in experiment.variants), experiment.salt)
    console.print(table)


@experiments_app.command("stop")
def stop(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The experiment to stop.")]) -> None:
    """Stop an experiment: new lists go back to the default variant; its counts stay for the report."""
    try:
        stopped = _run(ctx, lambda client: ExperimentStore(client).stop(name))
    except ExperimentError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    console.print(f"stopped [bold]{stopped.name}[/bold] (version {stopped.version})")


@experiments_app.command("report")
def report(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The experiment to report on.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Per-variant metrics with intervals, differences to the control, SRM check and guardrails."""
    from streamrec.experiments.report import build_report  # scipy: only for this command

    async def work(client):
        experiment = await ExperimentStore(client).get(name)
        if experiment is None:
            raise ExperimentError(f"no experiment named {name!r}")
        return await build_report(client, experiment)

    try:
        result = _run(ctx, work)
    except ExperimentError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(finite(result.as_dict()), indent=2))
        return
    print_report(result)


def finite(value):
    """JSON has no NaN or infinity: an estimate without data (no users yet) is null."""
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.2%}"


def print_report(result: "ExperimentReport", out: Console = console) -> None:
    """The report as tables (``out``: a recording console makes the README's picture of it)."""
    from streamrec.experiments.report import ESTIMATES
    from streamrec.experiments.statistics import DEFAULT_RELATIVE_TAU

    experiment = result.experiment
    out.print(f"[bold]{experiment.name}[/bold] ({experiment.kind}, {experiment.status}, version {experiment.version})")
    table = Table(title="per variant (95 % intervals)")
    for column in ("variant", "ranking", "users", "impressions", "clicks", "purchases", "revenue", *ESTIMATES):
        table.add_column(column, justify="right")
    for variant in result.variants:
        t = variant.totals
        cells = [f"{variant.estimates[k].value:.4g} [{variant.estimates[k].low:.3g}, {variant.estimates[k].high:.3g}]"
                 for k in ESTIMATES]
        table.add_row(variant.name, variant.ranking, f"{t['users']:.0f}", f"{t['impressions']:.0f}", f"{t['clicks']:.0f}",
                      f"{t['purchases']:.0f}", f"{t['revenue']:.2f}", *cells)
    out.print(table)
    if len(result.variants) > 1:
        diff = Table(title=f"against the control ({result.variants[0].name})")
        for column in ("variant", "metric", "difference", "95 % interval", "relative", "p (fixed)", "p (always valid)"):
            diff.add_column(column, justify="right")
        for variant in result.variants[1:]:
            for metric, d in variant.versus_control.items():
                diff.add_row(variant.name, metric, f"{d.value:+.4g}", f"[{d.low:+.3g}, {d.high:+.3g}]", _pct(d.relative),
                             f"{d.p_value:.3g}", f"{d.always_valid_p:.3g}")
        out.print(diff)
        out.print(f"[dim]always-valid p: mixture SPRT, N(0, τ²) with τ = {DEFAULT_RELATIVE_TAU:.0%} of the control's value; "
                      "valid however often the report is read. The fixed-horizon p is valid only read once, at a size "
                      "chosen in advance.[/dim]")
    if result.sample_ratio is not None:
        srm = result.sample_ratio
        verdict = "[red]MISMATCH: assignment or logging is broken; do not trust this report[/red]" if srm.mismatch else "ok"
        out.print(f"sample ratio: users {srm.observed} for shares {srm.expected_shares}, p = {srm.p_value:.3g}: {verdict}")
    if result.interleaving is not None:
        il = result.interleaving
        a, b = experiment.variants
        out.print(f"interleaving: {a.name} won {il.wins_a} users, {b.name} won {il.wins_b}, ties {il.ties}; "
                      f"preference for {b.name} {il.preference_b:+.3f}, sign test p = {il.p_value:.3g}")
    guard = Table(title="guardrails")
    for column in ("variant", "lists", "p99 ms", "degraded", "empty"):
        guard.add_column(column, justify="right")
    for variant in result.variants:
        g = variant.guardrails
        guard.add_row(variant.name, str(g.lists), f"{g.p99_ms:g}", _pct(g.degraded_share), _pct(g.empty_share))
    out.print(guard)
