"""Readers for the real e-commerce samples in ``../shared/data`` (see its README).

Each reader returns a :class:`Dataset`: catalog items (when the source has item
metadata) and interaction events ordered by their original time. Identifiers
get a short dataset prefix (``dg-``, ``yc-``, ``az-``) so that several datasets
can share one stack without colliding; Amazon items keep their ASIN.

What is real and what is not, per dataset:

* ``amazon_scientific`` — real item text and real per-user purchase order
  (reviews stand in for purchases); the source has **no timestamps**, so the
  spacing between events is synthetic (``synthetic_timing=True``).
* ``diginetica`` — real views and purchases with real in-session timing (day +
  ms since session start); items have only a category id, so catalog titles
  are placeholders naming that id.
* ``yoochoose`` — real clicks with real unix timestamps; no item metadata, so
  no catalog.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Literal

DATASETS = ("amazon_scientific", "diginetica", "yoochoose")


@dataclass(frozen=True, slots=True)
class DatasetEvent:
    time_ms: int
    kind: Literal["click", "purchase"]
    user_id: str
    session_id: str
    item_id: str
    order_id: str | None = None


@dataclass(frozen=True, slots=True)
class DatasetItem:
    item_id: str
    title: str
    category_path: tuple[str, ...] = ()
    brand: str | None = None
    description: str = ""


@dataclass
class Dataset:
    name: str
    catalog: list[DatasetItem]
    events: list[DatasetEvent]
    synthetic_timing: bool = False
    notes: list[str] = field(default_factory=list)


class DatasetMissing(FileNotFoundError):
    pass


def _require(path: Path) -> Path:
    if not path.exists():
        raise DatasetMissing(f"{path} not found: the shared datasets belong in ../shared/data (see its README)")
    return path


def load(name: str, data_dir: Path) -> Dataset:
    readers = {"amazon_scientific": load_amazon, "diginetica": load_diginetica, "yoochoose": load_yoochoose}
    if name not in readers:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return readers[name](data_dir)


# -- Amazon Scientific ------------------------------------------------------------------------

def parse_amazon_text(text: str) -> DatasetItem | None:
    """``ASIN \\t title. categories. brand.`` -> item.

    The source joins fields with ". " and the category levels with plain spaces;
    titles may contain ". " themselves and some rows carry a product description
    after the categories. The category part is found by its root
    ("Industrial & Scientific"), the brand is the last short segment, and any
    long tail goes to the description.
    """
    asin, _, body = text.rstrip("\n").partition("\t")
    body = body.strip()
    if not asin or not body:
        return None
    root = "Industrial & Scientific"
    marker = body.find(". " + root)
    if marker >= 0:
        title, rest = body[:marker], body[marker + 2 + len(root) :]
    else:
        title, _, rest = body.partition(". ")
    parts = [part.strip() for part in rest.strip().rstrip(".").split(". ") if part.strip()]
    brand = parts.pop() if len(parts) >= 2 and len(parts[-1]) <= 64 else None
    categories = parts.pop(0) if parts else ""
    description = ". ".join(parts)
    if len(categories) > 120:  # a description glued to the categories: keep the head as the category
        head = categories[:120].rsplit(" ", 1)[0]
        description = (categories[len(head) :].strip() + ". " + description).strip(". ")
        categories = head
    path = ((root, categories) if categories else (root,)) if marker >= 0 else ((categories,) if categories else ())
    return DatasetItem(
        item_id=asin,
        title=(title.strip() or asin)[:1024],
        category_path=path,
        brand=brand,
        description=description[:20_000],
    )


def load_amazon(data_dir: Path) -> Dataset:
    folder = data_dir / "amazon_scientific"
    catalog = []
    with open(_require(folder / "Scientific.text"), encoding="utf-8") as handle:
        next(handle)  # header
        for line in handle:
            item = parse_amazon_text(line)
            if item is not None:
                catalog.append(item)
    asin_by_index: dict[str, str] = {}
    with open(_require(folder / "Scientific.item2index"), encoding="utf-8") as handle:
        for line in handle:
            asin, _, index = line.rstrip("\n").partition("\t")
            asin_by_index[index] = asin
    events: list[DatasetEvent] = []
    # valid.inter's history is each user's full training sequence (the valid and test
    # targets are not replayed, so evaluation stays clean).
    day_ms = 86_400_000
    with open(_require(folder / "Scientific.valid.inter"), encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            user, history, _target = line.rstrip("\n").split("\t")
            for position, index in enumerate(history.split()):
                events.append(
                    DatasetEvent(
                        time_ms=position * day_ms + int(user) * 1_000,  # synthetic: a purchase a day per user
                        kind="purchase",
                        user_id=f"az-u{user}",
                        session_id=f"az-u{user}-{position}",
                        item_id=asin_by_index[index],
                        order_id=f"az-o{user}-{position}",
                    )
                )
    events.sort(key=lambda event: event.time_ms)
    return Dataset(
        "amazon_scientific",
        catalog,
        events,
        synthetic_timing=True,
        notes=["real purchase order per user; event spacing is synthetic (the source has no timestamps)"],
    )


# -- Diginetica -------------------------------------------------------------------------------

def _day_ms(day: str) -> int:
    return int(datetime.combine(date.fromisoformat(day), datetime.min.time(), timezone.utc).timestamp() * 1000)


def load_diginetica(data_dir: Path) -> Dataset:
    folder = data_dir / "diginetica_subset"
    events: list[DatasetEvent] = []

    def user_of(session: str, user: str) -> str:
        return f"dg-u{user}" if user and user != "NA" else f"dg-s{session}"

    with open(_require(folder / "sample_train-item-views.csv"), encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter=";"):
            events.append(
                DatasetEvent(
                    time_ms=_day_ms(row["eventdate"]) + int(row["timeframe"]),
                    kind="click",
                    user_id=user_of(row["session_id"], row["user_id"]),
                    session_id=f"dg-s{row['session_id']}",
                    item_id=f"dg-{row['item_id']}",
                )
            )
    with open(_require(folder / "train-purchases.csv"), encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter=";"):
            events.append(
                DatasetEvent(
                    time_ms=_day_ms(row["eventdate"]) + int(row["timeframe"]),
                    kind="purchase",
                    user_id=user_of(row["sessionId"], row["userId"]),
                    session_id=f"dg-s{row['sessionId']}",
                    item_id=f"dg-{row['itemId']}",
                    order_id=f"dg-o{row['ordernumber']}",
                )
            )
    events.sort(key=lambda event: event.time_ms)
    used = {event.item_id for event in events}
    catalog = []
    with open(_require(folder / "product-categories.csv"), encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter=";"):
            item_id = f"dg-{row['itemId']}"
            if item_id in used:
                category = f"diginetica category {row['categoryId']}"
                catalog.append(
                    DatasetItem(item_id=item_id, title=f"item {row['itemId']} ({category})", category_path=(category,))
                )
    return Dataset(
        "diginetica",
        catalog,
        events,
        notes=["real views and purchases; catalog titles are placeholders (the source has only category ids)"],
    )


# -- YooChoose --------------------------------------------------------------------------------

def load_yoochoose(data_dir: Path) -> Dataset:
    folder = data_dir / "yoochoose_100k"
    events: list[DatasetEvent] = []
    for part in ("yoochoose-clicks-100k_train_full.txt", "yoochoose-clicks-100k_test.txt"):
        with open(_require(folder / part), encoding="utf-8") as handle:
            next(handle)
            for line in handle:
                session, item, seconds = line.rstrip("\n").split("\t")
                events.append(
                    DatasetEvent(
                        time_ms=int(float(seconds) * 1000),
                        kind="click",
                        user_id=f"yc-s{session}",
                        session_id=f"yc-s{session}",
                        item_id=f"yc-{item}",
                    )
                )
    events.sort(key=lambda event: event.time_ms)
    return Dataset("yoochoose", [], events, notes=["real clicks; no item metadata, so no catalog"])
