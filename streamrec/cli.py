"""The ``streamrec`` command line.

Core commands (stack, topics, replay, quick-start, schemas) live here;
components add theirs through the ``streamrec.cli`` entry-point group (see
pyproject.toml), so this package never imports ``serving``, ``streams`` or
``trainer``. Settings are read once here and passed down. Commands that talk to Kafka (and
every component's service) first check that they can, with :mod:`streamrec.preflight`, so a
wrong address or password ends them with a message naming the setting instead of a hang.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streamrec.experiments.cli import experiments_app
from streamrec.preflight import PreflightError, check
from streamrec.settings import REPO_ROOT, Settings
from streamrec.stack import LocalStack, StackError

console = Console(highlight=False)
app = typer.Typer(
    help="streamrec: real-time recommendations for online shops.", no_args_is_help=True, pretty_exceptions_enable=False
)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
model_app = typer.Typer(help="Model versions in Triton's model repository.", no_args_is_help=True)
app.add_typer(model_app, name="model")
keys_app = typer.Typer(help="API keys of the collector, the API and the ops service (stored hashed in Redis).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(experiments_app, name="experiments")


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj


@app.callback()
def _load_settings(ctx: typer.Context) -> None:
    """Read settings once (environment variables prefixed STREAMREC_)."""
    if ctx.obj is None:
        try:
            ctx.obj = Settings()
        except ValidationError as error:
            problems = "\n".join(f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())
            console.print(f"[red]error:[/red] the settings are invalid (STREAMREC_* environment):\n{problems}")
            raise typer.Exit(2) from None


def _stack(settings: Settings) -> LocalStack:
    return LocalStack(settings.stack, say=lambda message: console.print(f"[dim]·[/dim] {message}"))


def _print_status(statuses) -> None:
    table = Table(title="streamrec local stack")
    for column in ("service", "address", "pid", "health"):
        table.add_column(column)
    for status in statuses:
        health = "[green]healthy[/green]" if status.healthy else f"[red]{status.detail}[/red]"
        table.add_row(status.name, status.address, str(status.pid or "-"), health)
    console.print(table)


@app.command()
def up(ctx: typer.Context) -> None:
    """Start the local stack (Kafka, Redis, Triton) and wait until every service is healthy."""
    try:
        statuses = _stack(_settings(ctx)).up()
    except StackError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    _print_status(statuses)
    if not all(status.healthy for status in statuses):
        raise typer.Exit(1)


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop the local stack (SIGTERM, then SIGKILL after the grace period); data is kept."""
    _stack(_settings(ctx)).down()


@app.command()
def status(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False
) -> None:
    """Health and address of each local service; exits 0 only when all are healthy."""
    statuses = _stack(_settings(ctx)).status()
    if as_json:
        print(json.dumps([s.as_dict() for s in statuses], indent=2))
    else:
        _print_status(statuses)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


@topics_app.command("create")
def topics_create(ctx: typer.Context) -> None:
    """Create streamrec's topics with the configured partitions (idempotent)."""
    from streamrec.kafka_admin import create_topics

    check(_settings(ctx), kafka=True)
    table = Table(title="topics")
    for column in ("topic", "partitions", "action"):
        table.add_column(column)
    for state in create_topics(_settings(ctx)):
        table.add_row(state.name, str(state.partitions), "created" if state.created else "exists")
    console.print(table)


@topics_app.command("counts")
def topics_counts(ctx: typer.Context) -> None:
    """Messages retained per streamrec topic."""
    from streamrec.kafka_admin import message_counts
    from streamrec.topics import TOPIC_SPECS

    check(_settings(ctx), kafka=True)
    _print_counts(message_counts(_settings(ctx), [spec.name.value for spec in TOPIC_SPECS]))


def _print_counts(counts: dict[str, int]) -> None:
    table = Table(title="messages per topic")
    table.add_column("topic")
    table.add_column("messages", justify="right")
    for topic, count in counts.items():
        table.add_row(topic, f"{count:,}")
    console.print(table)


@app.command()
def replay(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="amazon_scientific, diginetica or yoochoose.")],
    speed: Annotated[
        float, typer.Option(help="Time compression: 60 plays an hour in a minute; 0 sends as fast as possible.")
    ] = 0.0,
    limit: Annotated[int | None, typer.Option(help="Stop after this many interaction events.")] = None,
    data_dir: Annotated[Path, typer.Option(help="Folder with the shared datasets.")] = REPO_ROOT.parent / "shared" / "data",
) -> None:
    """Replay a real dataset into Kafka: its catalog first, then its events with their real relative timing."""
    from streamrec.datasets.replay import replay_dataset

    settings = _settings(ctx)
    check(settings, kafka=True)
    result = replay_dataset(settings, dataset, data_dir=data_dir, speed=speed, limit=limit, console=console)
    console.print(
        f"replayed {result.catalog_items:,} catalog items and {result.events:,} events "
        f"from {dataset} in {result.seconds:.1f} s ({result.events / max(result.seconds, 1e-9):,.0f} events/s)"
    )


@app.command()
def quickstart(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="Dataset to replay (amazon_scientific has real item titles).")] = "amazon_scientific",
    limit: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    users: Annotated[int, typer.Option(help="Users whose recommendations are shown.")] = 3,
    data_dir: Annotated[Path, typer.Option(help="Folder with the shared datasets.")] = REPO_ROOT.parent / "shared" / "data",
) -> None:
    """The whole loop on the local stack: events in, profiles, BERT-ranked recommendations with reasons out, lag."""
    from streamrec.quickstart import QuickstartError, run_quickstart

    try:
        run_quickstart(_settings(ctx), dataset=dataset, data_dir=data_dir, limit=limit, users=users, console=console)
    except (StackError, QuickstartError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    console.print(
        "The stack keeps running: `streamrec status`, `streamrec down`. Run the loop continuously with "
        "`streamrec streams worker`, `streamrec recs worker` and `streamrec api serve`."
    )


@app.command()
def schemas(
    out_dir: Annotated[Path, typer.Option(help="Where to write the JSON Schema files.")] = REPO_ROOT / "docs" / "schemas",
) -> None:
    """Write the contracts as JSON Schema files (one per event type and one per internal topic)."""
    from streamrec.schemas import schema_files

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, schema in schema_files().items():
        path = out_dir / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        console.print(f"wrote {path}")


@app.command()
def config(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table (for the README).")] = False,
) -> None:
    """Every setting: its environment variable, default and meaning."""
    from streamrec.settings import setting_docs, settings_markdown

    if markdown:
        print(settings_markdown())
        return
    docs = setting_docs()
    table = Table(title="settings (environment variables)")
    for column in ("variable", "default", "meaning"):
        table.add_column(column)
    for doc in docs:
        table.add_row(doc.env, doc.default, doc.description)
    console.print(table)


@app.command()
def lag(
    ctx: typer.Context,
    group: Annotated[list[str] | None, typer.Option("--group", "-g", help="Consumer group(s); default: all.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (one object per group).")] = False,
    max_lag: Annotated[int | None, typer.Option(help="Exit 2 when any partition lags more messages than this.")] = None,
    max_lag_s: Annotated[float | None, typer.Option(help="Exit 2 when any partition's oldest unread record is older than this (s).")] = None,
    sample_s: Annotated[float, typer.Option(help="Seconds between the two samples of a one-off reading (0: one sample).")] = 2.0,
    watch: Annotated[bool, typer.Option("--watch", help="Live table, sampled every --interval and judged over the window.")] = False,
    interval: Annotated[float | None, typer.Option(help="Seconds between samples with --watch (default ops.interval_s).")] = None,
    count: Annotated[int | None, typer.Option(help="With --watch: stop after this many samples (default: until Ctrl-C).")] = None,
) -> None:
    """Lag per group, topic and partition in messages and seconds, with a Burrow-style status per group.

    Exit codes for alerting (Nagios' convention): 0 every group OK, 1 some group WARN, 2 some group
    ERR, STOP, STALL or REWIND, or over --max-lag / --max-lag-s. A one-off reading has too few
    samples for the movement rules (STALL, STOP, WARN); --watch fills the window.
    """
    import time as clock

    from rich.live import Live

    from streamrec.lag import LagReader, Status, monitor_for, thresholds_for

    check(_settings(ctx), kafka=True)
    settings = _settings(ctx).ops
    thresholds = thresholds_for(settings)
    reader = LagReader(_settings(ctx).kafka)
    monitor = monitor_for(reader, settings, groups=group)
    try:
        if watch:
            every = interval or settings.interval_s
            taken = 0
            with Live(console=console, auto_refresh=False) as live:
                try:
                    while count is None or taken < count:
                        started = clock.monotonic()
                        reports = monitor.sample()
                        taken += 1
                        live.update(_lag_table(reports, thresholds), refresh=True)
                        if count is None or taken < count:
                            clock.sleep(max(0.0, every - (clock.monotonic() - started)))
                except KeyboardInterrupt:
                    pass
        else:
            reports = monitor.sample()
            if sample_s > 0:
                clock.sleep(sample_s)
                reports = monitor.sample()
            if not as_json:
                console.print(_lag_table(reports, thresholds))
        if as_json:
            print(json.dumps([report.as_dict() for report in reports], indent=2))
    finally:
        reader.close()
    partitions = [(report.group, p) for report in reports for p in report.partitions]
    over = [
        f"{name} {p.topic}[{p.partition}]: lag {p.offsets.lag:,}" + (f", {p.offsets.lag_seconds:.0f} s" if p.offsets.lag_seconds == p.offsets.lag_seconds else "")
        for name, p in partitions
        if (max_lag is not None and p.offsets.lag > max_lag) or (max_lag_s is not None and p.offsets.lag_seconds > max_lag_s)
    ]
    if over:
        limits = " / ".join(part for part in (f"{max_lag:,} messages" if max_lag is not None else "",
                                              f"{max_lag_s:g} s" if max_lag_s is not None else "") if part)
        console.print(f"[red]{over[0]} exceeds {limits}[/red]" + (f" (and {len(over) - 1} more)" if len(over) > 1 else ""), highlight=False)
    worst = max((report.status for report in reports), default=Status.OK)
    if over or worst >= Status.ERR:
        raise typer.Exit(2)
    if worst is Status.WARN:
        raise typer.Exit(1)


_STATUS_STYLE = {"OK": "green", "WARN": "yellow"}


def _lag_table(reports, thresholds) -> Table:
    table = Table(title=f"consumer lag (status over {thresholds.window} samples; WARN > {thresholds.warn_lag_s:g} s, "
                        f"ERR > {thresholds.err_lag_s:g} s behind)")
    for column in ("group", "status", "topic", "partition", "committed", "log end", "lag", "lag s", "msg/s", "trend/s", "catch-up"):
        table.add_column(column, justify="left" if column in ("group", "status", "topic") else "right")
    for report in reports:
        style = _STATUS_STYLE.get(report.status.name, "red")
        for index, p in enumerate(report.partitions):
            catch_up = "-" if p.offsets.lag == 0 else ("never" if p.catch_up_s == float("inf") else f"{p.catch_up_s:.0f} s")
            seconds = "?" if p.offsets.lag_seconds != p.offsets.lag_seconds else (
                f"{p.offsets.lag_seconds:,.1f}" + ("" if p.offsets.lag_seconds_exact else " (est.)"))
            table.add_row(
                report.group if index == 0 else "",
                f"[{style}]{report.status.name}[/{style}]" if index == 0 else "",
                p.topic, str(p.partition), str(p.offsets.committed if p.offsets.committed is not None else "-"),
                str(p.offsets.log_end), f"{p.offsets.lag:,}", seconds, f"{p.consume_rate:,.0f}", f"{p.lag_trend:+,.1f}", catch_up,
            )
        if report.status.name != "OK":
            table.add_row("", f"[{style}]{report.rule}[/{style}]", "", "", "", "", "", "", "", "", "")
    return table


@app.command()
def quality(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (the scorecard as one object).")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each /metrics.")] = 5.0,
) -> None:
    """The data-quality scorecard from the streams worker's (and the collector's) /metrics, with its level 1-5.

    Exit codes for alerting: 0 for level 3 or better, 1 for level 2, 2 for level 1 or when the
    streams worker's metrics cannot be read. Without the collector's the scorecard is still made,
    with its check left out.
    """
    import httpx

    from streamrec.data_quality import NotStreamsMetrics, scorecard_from_metrics

    unreadable = (httpx.HTTPError, httpx.InvalidURL, ValueError)  # unreachable, an error status, not Prometheus text
    settings = _settings(ctx)
    streams_url = settings.ops.streams_metrics_url or ""
    collector_url = (settings.ops.collector_url or "").rstrip("/") + "/metrics"
    try:
        streams_text = _fetch_text(streams_url, timeout)
        card = scorecard_from_metrics(streams_text, None, settings.data_quality)
    except unreadable as error:
        reason = str(error) if isinstance(error, NotStreamsMetrics) else _why(error)
        message = f"cannot read the streams worker's metrics at {streams_url}: {reason}"
        if as_json:
            print(json.dumps({"level": None, "error": message}, indent=2))
        else:
            console.print(f"[red]error:[/red] {message} (is `streamrec streams worker` running? "
                          "STREAMREC_OPS__STREAMS_METRICS_URL sets the address)")
        raise typer.Exit(2) from None
    collector_error = None
    try:
        card = scorecard_from_metrics(streams_text, _fetch_text(collector_url, timeout), settings.data_quality)
    except unreadable as error:  # an optional source: reported, never fatal
        collector_error = _why(error)
    notes = list(card.notes)
    if collector_error is not None:
        notes = [f"collector metrics at {collector_url} not read ({collector_error}): collector_events_rejected left out"]
    if as_json:
        sources = {"streams": streams_url, "collector": None if collector_error else collector_url}
        print(json.dumps({**card.as_dict(), "notes": notes, "sources": sources}, indent=2))
    else:
        console.print(_quality_table(card))
        style = _LEVEL_STYLE.get(card.level, "red")
        console.print(f"[{style}]level {card.level}[/{style}] ({card.events_seen:,} events read): {card.level_rule}")
        for note in notes:
            console.print(f"[yellow]note:[/yellow] {note}")
    if card.level <= 1:
        raise typer.Exit(2)
    if card.level == 2:
        raise typer.Exit(1)


_LEVEL_STYLE = {5: "green", 4: "green", 3: "yellow"}
_GRADE_STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


def _why(error: Exception) -> str:
    """One line on why a /metrics could not be used."""
    import httpx

    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code}"
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _fetch_text(url: str, timeout_s: float) -> str:
    import httpx

    response = httpx.get(url, timeout=timeout_s)
    response.raise_for_status()
    return response.text


def _quality_table(card) -> Table:
    def figure(check, value: float) -> str:
        return f"{value:,.1f} s" if check.unit == "seconds" else f"{100 * value:.2f} %"

    table = Table(title="data quality")
    for column in ("dimension", "check", "figure", "target", "limit", "grade", "detail"):
        table.add_column(column, justify="right" if column in ("figure", "target", "limit") else "left")
    for check in card.checks:
        better = ">=" if check.higher_is_better else "<="
        worse = "<" if check.higher_is_better else ">"
        style = _GRADE_STYLE[check.grade]
        table.add_row(check.dimension, check.name, figure(check, check.value), f"{better} {figure(check, check.target)}",
                      f"fail {worse} {figure(check, check.limit)}", f"[{style}]{check.grade}[/{style}]", check.detail)
    return table


@model_app.command("init")
def model_init(
    ctx: typer.Context,
    tiny: Annotated[bool, typer.Option(help="A tiny random BERT (tests), not the pretrained MiniLM.")] = False,
) -> None:
    """Write version 1 of the item encoder and the scorers (teacher, student) where a model has none."""
    from streamrec.model.bootstrap import init_item_encoder, init_scorers

    repo = _settings(ctx).model_repo
    folder = init_item_encoder(repo, tiny=tiny)
    console.print(f"wrote {folder}" if folder else "item_encoder already has a version")
    written = init_scorers(repo, tiny=tiny)
    for folder in written:
        console.print(f"wrote {folder} (untrained head: train with `streamrec trainer train-scorer --publish`)")
    if not written:
        console.print("cross_encoder and cross_encoder_student already have versions")


def _registry(ctx: typer.Context, model: str | None):
    from streamrec.model.rollback import registry_for

    return registry_for(_settings(ctx), model, say=lambda message: console.print(f"[dim]·[/dim] {message}"))


@model_app.command("list")
def model_list(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Model name (default: the trainer's model).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Versions of a scorer: which one Triton serves, their hold-out metrics, gate and lineage."""
    infos = _registry(ctx, model).list()
    if as_json:
        print(json.dumps([info.as_dict() for info in infos], indent=2, default=str))
        return
    import time as _time

    table = Table(title=f"{model or _settings(ctx).trainer.model} versions")
    for column in ("version", "state", "created", "parent", "events", "ndcg@10", "hr@10", "auc", "base"):
        table.add_column(column, justify="right" if column not in ("state", "base", "created") else "left")
    for info in infos:
        meta = info.metadata
        lineage = meta.lineage if meta else {}
        metrics = meta.metrics if meta else {}
        state = {"serving": "[green]serving[/green]", "retired": "[dim]retired[/dim]"}.get(info.state, info.state)
        table.add_row(
            str(info.version), state,
            _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(meta.created_at)) if meta else "-",
            str(lineage.get("parent", "-")), f"{lineage['events_used']:,}" if "events_used" in lineage else "-",
            *(f"{metrics[k]:.4f}" if k in metrics else "-" for k in ("holdout_ndcg10", "holdout_hr10", "holdout_auc")),
            meta.base if meta else "(unreadable metadata)",
        )
    console.print(table)


@model_app.command("rollback")
def model_rollback(
    ctx: typer.Context,
    to: Annotated[int | None, typer.Option("--to", help="Version to serve (default: the one before the served one).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name (default: the trainer's model).")] = None,
) -> None:
    """Serve an earlier version without downtime (Triton keeps the current one until it is ready);
    newer versions are retired, so a restarted Triton serves the same one."""
    from streamrec.model.registry import VersionRejected
    from streamrec.model.rollback import roll_back

    try:
        done = roll_back(_settings(ctx), to=to, model=model, say=lambda message: console.print(f"[dim]·[/dim] {message}"))
    except (ValueError, VersionRejected) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    if done.announce_error:
        console.print(f"[yellow]rolled back, but model.updates was not written: {done.announce_error}[/yellow]")
    console.print(f"{done.model}: serving version {done.version}")


def _with_key_store(ctx: typer.Context, work):
    """Run ``await work(store)`` against the configured Redis."""
    import asyncio

    from streamrec.auth.store import KeyStore
    from streamrec.store.connection import connect

    async def run():
        client = connect(_settings(ctx).redis)
        try:
            return await work(KeyStore(client))
        finally:
            await client.aclose()

    return asyncio.run(run())


def _key_dict(record) -> dict:
    return {"id": record.key_id, "name": record.name, "kind": record.kind, "scopes": sorted(record.scopes),
            "origins": list(record.origins), "created_at": record.created_at, "revoked_at": record.revoked_at}


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    kind: Annotated[Literal["publishable", "secret"], typer.Option(
        "--kind", help="publishable (web pages: events:write from its origins) or secret (backends).")],
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key (a shop, a service).")],
    scopes: Annotated[list[str] | None, typer.Option("--scope", help="events:write, recs:read, ops:read or admin (repeat).")] = None,
    origins: Annotated[list[str] | None, typer.Option("--origin", help="Web origin a publishable key works from, e.g. https://shop.example (repeat).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (the key included).")] = False,
) -> None:
    """Create a key and print it: this is the only time it is shown (Redis keeps a hash of it)."""
    from streamrec.auth.keys import InvalidKeySpec

    try:
        record, text = _with_key_store(ctx, lambda store: store.create(kind, name, set(scopes or ()), list(origins or ())))
    except InvalidKeySpec as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps({**_key_dict(record), "key": text}, indent=2))
        return
    console.print(f"created {record.kind} key [bold]{record.key_id}[/bold] ({record.name}): "
                  f"{', '.join(sorted(record.scopes))}" + (f" from {', '.join(record.origins)}" if record.origins else ""))
    print(text)
    console.print("[yellow]Store it now: it is not shown again and cannot be recovered.[/yellow]")


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every key with its kind, scopes, origins and times (never the key itself)."""
    import time as _time

    records = _with_key_store(ctx, lambda store: store.list())
    if as_json:
        print(json.dumps([_key_dict(record) for record in records], indent=2))
        return
    table = Table(title="API keys")
    for column in ("id", "name", "kind", "scopes", "origins", "created", "revoked"):
        table.add_column(column, no_wrap=column == "id")  # ids are copied into `keys revoke`
    stamp = lambda t: _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(t))  # noqa: E731
    for record in records:
        table.add_row(record.key_id, record.name, record.kind, " ".join(sorted(record.scopes)), " ".join(record.origins),
                      stamp(record.created_at), f"[red]{stamp(record.revoked_at)}[/red]" if record.revoked else "-")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id (`streamrec keys list`).")]) -> None:
    """Revoke a key: services refuse it once their cached copy is older than STREAMREC_AUTH__CACHE_S."""
    record = _with_key_store(ctx, lambda store: store.revoke(key_id))
    if record is None:
        console.print(f"[red]error:[/red] no key with id {key_id!r}")
        raise typer.Exit(1)
    console.print(f"revoked {record.key_id} ({record.name}); services refuse it within "
                  f"{_settings(ctx).auth.cache_s:g} s")


def _add_component_commands() -> None:
    for entry in entry_points(group="streamrec.cli"):
        app.add_typer(entry.load(), name=entry.name)


def main() -> None:
    from streamrec.datasets.loaders import DatasetMissing

    _add_component_commands()
    try:
        app()
    except (StackError, DatasetMissing, PreflightError) as error:  # pragma: no cover - printed for people, exit code for scripts
        console.print(f"[red]error:[/red] {escape(str(error))}")
        sys.exit(1)
