"""What the data-quality scorecard reads: metric names, their labels and the rules they count.

The streams worker and the collector write these metrics and :mod:`streamrec.data_quality`
reads them back from their /metrics text, so each name is spelt once, here, for both. Names are
as given to ``prometheus_client``: a counter's exposition adds ``_total``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import get_args

from streamrec.settings import CatalogField
from streamrec.store.catalog import CatalogRecord


class Rule(StrEnum):
    """Why the streams worker set an interaction aside (the ``rule`` label, and the quarantine record's)."""

    MALFORMED = "malformed"
    FUTURE_TIMESTAMP = "future_timestamp"
    LATE_TIMESTAMP = "late_timestamp"
    DUPLICATE = "duplicate"
    BOT_CLICK_RATE = "bot_click_rate"
    PRICE_MISMATCH = "price_mismatch"


STREAMS_EVENTS = "streamrec_streams_events"
"""Interactions applied to profiles, label ``type``; canary users' are not in it."""
STREAMS_REJECTIONS = "streamrec_streams_rejections"
"""Interactions set aside, label ``rule`` (a :class:`Rule`); canary users' are not in it."""
STREAMS_ITEM_LOOKUPS = "streamrec_streams_item_lookups"
"""Applied interactions by whether the catalog has their item, label ``found`` ("true", "false")."""
STREAMS_EVENT_DELAY = "streamrec_streams_event_delay_seconds"
"""Histogram of an applied interaction's Kafka timestamp minus its ``ts`` (0 when stamped ahead)."""
STREAMS_CATALOG_ITEMS = "streamrec_streams_catalog_items"
"""Catalog items stored (an item updated twice counts twice)."""
STREAMS_CATALOG_FIELDS_MISSING = "streamrec_streams_catalog_fields_missing"
"""Catalog items stored without a field, label ``field`` (one of :data:`CATALOG_FIELDS`)."""
STREAMS_CANARY_EVENTS = "streamrec_streams_canary_events"
"""Canary users' interactions, label ``outcome`` ("applied" or the :class:`Rule`), kept out of the others."""
COLLECTOR_EVENTS = "streamrec_collector_events"
"""Events the collector received, labels ``outcome`` (accepted, rejected, failed) and ``kind``."""
CANARY_KIND = "canary"
"""The ``kind`` of the collector's accepted canary events (``kind="ok"`` counts the others)."""

EVENT_DELAY_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 6 * 3600, 86400, 7 * 86400)
"""Seconds; 60 and 600 are bounds, so the default delay target and limit are judged without interpolation."""

CATALOG_FIELDS: tuple[CatalogField, ...] = get_args(CatalogField)


def missing_catalog_fields(record: CatalogRecord) -> tuple[CatalogField, ...]:
    """The fields of :data:`CATALOG_FIELDS` that ``record`` lacks (a price of 0 is a price)."""
    present = {
        "title": bool(record.title),
        "category": bool(record.category_path),
        "brand": bool(record.brand),
        "price": record.price is not None,
        "currency": bool(record.currency),
    }
    return tuple(name for name in CATALOG_FIELDS if not present[name])
