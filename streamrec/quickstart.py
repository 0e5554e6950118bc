"""The main job on the embedded local stack, end to end, for the README's first command.

Model versions (the pretrained MiniLM item encoder where the repository has none; the
sequence scorer ``bert_scorer`` trained on the dataset's sequences unless the newest version
already was) → stack up → both loaded into Triton → topics → streams and recs workers started
as child processes → a real dataset's catalog embedded, then its events replayed → wait until
both consumer groups have caught up → show a few users' recommendation lists with their
reasons → show the lag. The workers are stopped at the end; the stack keeps running.

The trainer and the workers are started as ``python -m streamrec trainer train-sequence`` /
``streams worker`` / ``recs worker`` (found through the CLI's entry points), so this core
module imports no component.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import tritonclient.http as httpclient
from rich.console import Console
from rich.table import Table

from streamrec.components import ComponentProcess
from streamrec.datasets.loaders import load
from streamrec.datasets.replay import replay_dataset
from streamrec.kafka_admin import commit_groups_at_end, create_topics
from streamrec.lag import LagReader
from streamrec.model import contract
from streamrec.preflight import check
from streamrec.settings import RedisSettings, Settings
from streamrec.stack import LocalStack
from streamrec.store.catalog import CatalogRecord
from streamrec.store.catalog_store import CatalogStore
from streamrec.store.connection import connect
from streamrec.store.recommendation_cache import RecommendationCache
from streamrec.topics import INTERACTION_TOPICS, Topic


class QuickstartError(RuntimeError):
    pass


def load_models(settings: Settings, models: list[str], timeout_s: float = 300) -> None:
    """Ask Triton (explicit model control) to load ``models`` and wait until each is ready."""
    assert settings.triton.http_url is not None
    client = httpclient.InferenceServerClient(settings.triton.http_url, network_timeout=timeout_s)
    for model in models:
        client.load_model(model)
        deadline = time.monotonic() + timeout_s
        while not client.is_model_ready(model):
            if time.monotonic() > deadline:
                raise QuickstartError(f"Triton did not make {model} ready within {timeout_s:.0f} s")
            time.sleep(0.5)




def _wait_caught_up(settings: Settings, console: Console, workers: list[ComponentProcess], timeout_s: float) -> None:
    groups = {
        settings.streams.app_id: [t.value for t in (*INTERACTION_TOPICS, Topic.CATALOG)],
        settings.recs.app_id: [Topic.PROFILES_UPDATED.value],
    }
    reader = LagReader(settings.kafka)
    deadline = time.monotonic() + timeout_s
    try:
        with console.status("waiting for the workers to catch up") as status:
            while True:
                for worker in workers:
                    if not worker.alive():
                        raise QuickstartError(f"{' '.join(worker.args)} exited; its log:\n{worker.log_tail()}")
                rows = reader.read(list(groups), sample_s=0, topics=[t for ts in groups.values() for t in ts])
                lags = {group: sum(r.lag for r in rows if r.group == group and r.topic in topics) for group, topics in groups.items()}
                status.update(" · ".join(f"{group}: lag {lag:,}" for group, lag in lags.items()))
                if all(lag == 0 for lag in lags.values()):
                    return
                if time.monotonic() > deadline:
                    raise QuickstartError(f"workers did not catch up within {timeout_s:.0f} s: {lags}")
                time.sleep(1.0)
    finally:
        reader.close()


SHOWN_ITEMS = 5


def _show_recommendations(settings: Settings, console: Console, users: list[str]) -> int:
    lists, records = asyncio.run(_read_lists(settings.redis, users))
    for user_id, recs in lists.items():
        table = Table(
            title=f"user {user_id} · {recs['model_version']} · {'DEGRADED · ' if recs['degraded'] else ''}rec {recs['rec_id'][:8]}"
        )
        for column in ("#", "item", "title", "score", "why"):
            table.add_column(column, justify="right" if column in ("#", "score") else "left")
        for rank, item in enumerate(recs["items"][:SHOWN_ITEMS], 1):
            title = records[item["item_id"]].title if item["item_id"] in records else ""
            table.add_row(str(rank), item["item_id"], title[:50], f"{item['score']:.3f}", item["reason"][:70])
        console.print(table)
    return len(lists)


async def _read_lists(redis_settings: RedisSettings, users: list[str]) -> tuple[dict[str, dict], dict[str, CatalogRecord]]:
    """The cached lists of those users that have one, and the catalog records of their shown items."""
    client = connect(redis_settings)
    try:
        cache = RecommendationCache(client)
        lists = {user_id: json.loads(raw) for user_id in users if (raw := await cache.read(user_id)) is not None}
        shown = {item["item_id"] for recs in lists.values() for item in recs["items"][:SHOWN_ITEMS]}
        return lists, await CatalogStore(client).read(sorted(shown))
    finally:
        await client.aclose()


def _trained_on(repo: Path, dataset: str, limit: int | None) -> Path | None:
    """The newest ``bert_scorer`` version if it was trained on ``dataset`` (its first ``limit`` events)."""
    from streamrec.model.artifacts import read_metadata, versions

    found = versions(repo / contract.BERT_SCORER)
    if not found:
        return None
    folder = repo / contract.BERT_SCORER / str(found[-1])
    lineage = read_metadata(folder).lineage
    trained = lineage.get("trained") and lineage.get("dataset") == dataset and lineage.get("limit") == limit
    return folder if trained else None


def train_scorer(settings: Settings, dataset: str, data_dir: Path, limit: int | None, console: Console) -> Path:
    """Train the sequence scorer on the sequences the run replays (about a minute on 2 cores) unless done."""
    repo = settings.stack.model_repo
    folder = _trained_on(repo, dataset, limit)
    if folder is not None:
        console.print(f"[dim]·[/dim] {contract.BERT_SCORER}: version {folder.name} is trained on {dataset}")
        return folder
    command = [sys.executable, "-m", "streamrec", "trainer", "train-sequence", "--dataset", dataset,
               "--data-dir", str(data_dir), "--out", str(repo), *(["--limit", str(limit)] if limit else [])]
    with console.status(f"training {contract.BERT_SCORER} on {dataset}"):
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise QuickstartError(f"training {contract.BERT_SCORER} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    folder = _trained_on(repo, dataset, limit)
    assert folder is not None
    console.print(f"[dim]·[/dim] {done.stdout.strip().splitlines()[-1]}")
    return folder


def run_quickstart(
    settings: Settings, *, dataset: str, data_dir: Path, limit: int | None, users: int, console: Console, timeout_s: float = 900
) -> None:
    from streamrec.model.bootstrap import init_item_encoder

    repo = settings.stack.model_repo
    folder = init_item_encoder(repo)
    if folder is not None:
        console.print(f"[dim]·[/dim] wrote first model version {folder}")
    train_scorer(settings, dataset, data_dir, limit, console)
    LocalStack(settings.stack, say=lambda message: console.print(f"[dim]·[/dim] {message}")).up()
    check(settings, kafka=True, redis=True)  # the stack is up: now the clients' settings must reach it
    load_models(settings, [contract.ITEM_ENCODER, settings.recs.scorer_model])
    create_topics(settings)
    log_dir = settings.stack.state_dir / "logs"
    # Lists for this run's users only: the recs group skips updates left from earlier runs.
    commit_groups_at_end(settings.kafka, {settings.recs.app_id: [Topic.PROFILES_UPDATED.value]})
    workers = [
        ComponentProcess([component, "worker"], log_dir / f"quickstart-{component}.log").start()
        for component in ("streams", "recs")
    ]
    try:
        data = load(dataset, data_dir)
        if limit is not None:
            data = replace(data, events=data.events[:limit])
        replay_dataset(settings, dataset, data_dir=data_dir, console=console, dataset=replace(data, events=[]))
        _wait_caught_up(settings, console, workers, timeout_s)  # every item embedded before events refer to it
        result = replay_dataset(settings, dataset, data_dir=data_dir, console=console, dataset=replace(data, catalog=[]))
        console.print(f"replayed {len(data.catalog):,} catalog items and {result.events:,} real events from {dataset}")
        _wait_caught_up(settings, console, workers, timeout_s)
        counts: dict[str, int] = {}
        for event in data.events:
            counts[event.user_id] = counts.get(event.user_id, 0) + 1
        busiest = sorted(counts, key=counts.get, reverse=True)[: users * 3]
        if not _show_recommendations(settings, console, busiest[:users] + busiest[users:]):
            raise QuickstartError("no recommendation lists were cached; see .streamrec/logs/quickstart-recs.log")
        _show_quality(settings, console)
    finally:
        for worker in workers:
            worker.stop()
    _show_lag(settings, console)


def _show_quality(settings: Settings, console: Console) -> None:
    """The data-quality level of what was replayed, from the streams worker's own counters."""
    import httpx

    from streamrec.data_quality import scorecard_from_metrics

    try:
        text = httpx.get(settings.ops.streams_metrics_url, timeout=5).text
        card = scorecard_from_metrics(text, thresholds=settings.data_quality)
    except (httpx.HTTPError, ValueError) as error:
        console.print(f"[yellow]data quality not read: {error}[/yellow]")
        return
    missed = ", ".join(f"{check.name} {check.value:.3g} ({check.grade})" for check in card.checks if check.grade != "ok")
    console.print(f"data quality of the replayed events: level {card.level} of 5 ({card.level_rule})"
                  + (f"; not ok: {missed}" if missed else "") + " — `streamrec quality` while a streams worker runs")


def _show_lag(settings: Settings, console: Console) -> None:
    reader = LagReader(settings.kafka)
    try:
        rows = reader.read([settings.streams.app_id, settings.recs.app_id], sample_s=0)
    finally:
        reader.close()
    table = Table(title="consumer lag after the run (`streamrec lag --watch` any time; `streamrec ops serve` for the live page)")
    for column in ("group", "topic", "partitions", "lag", "oldest unread"):
        table.add_column(column, justify="left" if column in ("group", "topic") else "right")
    per_topic: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for row in rows:
        per_topic.setdefault((row.group, row.topic), []).append((row.lag, row.lag_seconds))
    for (group, topic), lags in sorted(per_topic.items()):
        oldest = max(seconds for _, seconds in lags)
        table.add_row(group, topic, str(len(lags)), f"{sum(lag for lag, _ in lags):,}", "-" if oldest == 0 else f"{oldest:,.1f} s")
    console.print(table)
