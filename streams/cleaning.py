"""Data-governance rules applied to every interaction before it touches a profile.

Each rule either passes an event or names why it is set aside; nothing is
dropped silently: the worker writes every rejected event to ``events.dlq``
(unreadable) or ``events.quarantine`` (readable but suspicious) with the rule
and the reason, and counts it per rule.

Rules only use data that is the same on every replay — the event, its Kafka
timestamp, the catalog and the user's profile — never the wall clock, so a
worker restarted after a crash decides exactly as before.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from streamrec.events import PurchaseEvent
from streamrec.quality_metrics import Rule  # the rules' names are a contract: metrics labels, quarantine records
from streamrec.settings import StreamsSettings
from streamrec.store.catalog import CatalogRecord
from streamrec.store.profile import UserProfile


@dataclass(frozen=True)
class Rejection:
    rule: Rule
    reason: str


def check_timestamp(event_ts: int, kafka_ts_ms: int, settings: StreamsSettings) -> Rejection | None:
    """Compare the event's own time with when Kafka received it (not with our clock)."""
    ahead_s = (event_ts - kafka_ts_ms) / 1000
    if ahead_s > settings.max_future_s:
        return Rejection(Rule.FUTURE_TIMESTAMP, f"ts is {ahead_s:.0f} s after its Kafka timestamp (limit {settings.max_future_s:.0f} s)")
    if -ahead_s > settings.max_late_s:
        return Rejection(Rule.LATE_TIMESTAMP, f"ts is {-ahead_s:.0f} s before its Kafka timestamp (limit {settings.max_late_s:.0f} s)")
    return None


def check_duplicate(profile: UserProfile, event_id: uuid.UUID, ts: int, settings: StreamsSettings) -> Rejection | None:
    """Drop a repeated ``event_id`` within the window; remember this one otherwise.

    The memory is per user (ids arrive keyed by user) and bounded, so it lives in
    the profile instead of a global key per event.
    """
    prefix = event_id.bytes[:8]
    horizon = max(ts, profile.last_seen) - settings.dedup_window_s * 1000
    profile.seen_ids = [(seen, seen_ts) for seen, seen_ts in profile.seen_ids if seen_ts >= horizon]
    if any(seen == prefix for seen, _ in profile.seen_ids):
        return Rejection(Rule.DUPLICATE, f"event_id {event_id} already applied within {settings.dedup_window_s:.0f} s")
    profile.seen_ids.append((prefix, ts))
    del profile.seen_ids[: max(0, len(profile.seen_ids) - settings.dedup_max_ids)]
    return None


def check_click_rate(profile: UserProfile, ts: int, settings: StreamsSettings) -> Rejection | None:
    """More than ``bot_max_clicks`` clicks in ``bot_window_s`` looks like a bot, not a shopper."""
    window_ms = settings.bot_window_s * 1000
    profile.click_times.append(ts)
    profile.click_times = sorted(t for t in profile.click_times if t >= ts - window_ms)[-(settings.bot_max_clicks + 1) :]
    in_window = sum(1 for t in profile.click_times if ts - window_ms <= t <= ts)
    if in_window > settings.bot_max_clicks:
        return Rejection(
            Rule.BOT_CLICK_RATE, f"{in_window} clicks within {settings.bot_window_s:.0f} s (limit {settings.bot_max_clicks})"
        )
    return None


def check_price(purchase: PurchaseEvent, catalog: CatalogRecord | None, settings: StreamsSettings) -> Rejection | None:
    """A purchase whose unit price is far from the catalog price is suspicious (typo, fraud, wrong currency)."""
    if purchase.price is None or catalog is None or not catalog.price:
        return None
    if catalog.currency and purchase.currency and catalog.currency != purchase.currency:
        return Rejection(Rule.PRICE_MISMATCH, f"currency {purchase.currency} but the catalog says {catalog.currency}")
    off = abs(purchase.price - catalog.price) / catalog.price
    if off > settings.price_tolerance:
        total = purchase.price * purchase.quantity
        return Rejection(
            Rule.PRICE_MISMATCH,
            f"amount {total:.2f} = {purchase.quantity} x {purchase.price:.2f} but the catalog price is "
            f"{catalog.price:.2f} ({off:.0%} off, limit {settings.price_tolerance:.0%})",
        )
    return None


def fill_from_catalog(purchase: PurchaseEvent, catalog: CatalogRecord | None) -> PurchaseEvent:
    """Missing price or currency on a purchase is taken from the catalog."""
    if catalog is None:
        return purchase
    updates = {}
    if purchase.price is None and catalog.price is not None:
        updates["price"] = catalog.price
    if purchase.currency is None and catalog.currency is not None:
        updates["currency"] = catalog.currency
    return purchase.model_copy(update=updates) if updates else purchase
