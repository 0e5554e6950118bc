"""Replay a real dataset into Kafka: catalog first, then events with their real relative timing.

With ``speed`` X the gaps between events shrink X-fold (``speed=0`` sends as
fast as the producer allows). Events are stamped with the wall-clock time they
are sent at, so downstream freshness measures are meaningful; their order and
relative spacing are the dataset's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streamrec.datasets.loaders import Dataset, DatasetEvent, DatasetItem, load
from streamrec.events import CatalogItem, ClickEvent, PurchaseEvent
from streamrec.producer import EventProducer
from streamrec.settings import Settings


@dataclass(frozen=True)
class ReplayResult:
    dataset: str
    catalog_items: int
    events: int
    seconds: float
    synthetic_timing: bool


def catalog_event(item: DatasetItem, ts_ms: int) -> CatalogItem:
    return CatalogItem(
        item_id=item.item_id,
        ts=ts_ms,
        title=item.title,
        description=item.description,
        category_path=list(item.category_path),
        brand=item.brand,
    )


def interaction_event(event: DatasetEvent, ts_ms: int) -> ClickEvent | PurchaseEvent:
    if event.kind == "purchase":
        return PurchaseEvent(
            user_id=event.user_id,
            session_id=event.session_id,
            item_id=event.item_id,
            order_id=event.order_id or f"{event.session_id}-order",
            ts=ts_ms,
        )
    return ClickEvent(user_id=event.user_id, session_id=event.session_id, item_id=event.item_id, ts=ts_ms)


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        disable=console is None,
        transient=False,
    )


def replay_dataset(
    settings: Settings,
    name: str,
    *,
    data_dir: Path,
    speed: float = 0.0,
    limit: int | None = None,
    console: Console | None = None,
    dataset: Dataset | None = None,
) -> ReplayResult:
    dataset = dataset or load(name, data_dir)
    events = dataset.events[:limit] if limit is not None else dataset.events
    if console is not None:
        for note in dataset.notes:
            console.print(f"[dim]{dataset.name}: {note}[/dim]")
    started = time.monotonic()
    with EventProducer.from_settings(settings, client="replay") as producer, _progress(console) as bar:
        now_ms = int(time.time() * 1000)
        catalog_task = bar.add_task(f"catalog  {dataset.name}", total=len(dataset.catalog), rate="")
        for count, item in enumerate(dataset.catalog, 1):
            producer.produce(catalog_event(item, now_ms))
            if count % 1000 == 0:
                producer.poll(0)
                bar.update(catalog_task, completed=count)
        bar.update(catalog_task, completed=len(dataset.catalog))
        producer.flush()  # the catalog is in Kafka before any event refers to it

        events_task = bar.add_task(f"events   {dataset.name}", total=len(events), rate="")
        first_ms = events[0].time_ms if events else 0
        wall_start = time.monotonic()
        epoch_start_ms = int(time.time() * 1000)
        for count, event in enumerate(events, 1):
            offset_s = (event.time_ms - first_ms) / 1000 / speed if speed > 0 else 0.0
            delay = wall_start + offset_s - time.monotonic()
            if delay > 0:
                producer.poll(min(delay, 0.05))
                while (delay := wall_start + offset_s - time.monotonic()) > 0:
                    time.sleep(min(delay, 0.05))
            ts_ms = epoch_start_ms + int(offset_s * 1000) if speed > 0 else int(time.time() * 1000)
            producer.produce(interaction_event(event, ts_ms))
            if count % 2000 == 0:
                producer.poll(0)
                elapsed = time.monotonic() - wall_start
                bar.update(events_task, completed=count, rate=f"{count / max(elapsed, 1e-9):,.0f} ev/s")
        bar.update(events_task, completed=len(events))
    return ReplayResult(
        dataset=dataset.name,
        catalog_items=len(dataset.catalog),
        events=len(events),
        seconds=time.monotonic() - started,
        synthetic_timing=dataset.synthetic_timing,
    )
