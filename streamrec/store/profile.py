"""The user profile: one compact, bounded value per user (encoded by :mod:`streamrec.store.layout`).

Decayed quantities (category affinities, the profile vector) are stored as
their value at ``ref_ts`` (the newest event time seen); reading them at time
``t`` multiplies by ``decay(t - ref_ts)``. Keeping the reference at the newest
event makes an out-of-order (older) event a plain weighted add, so the result
does not depend on the order in which topics deliver a user's events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

INTERACTION_TYPES = ("click", "add_to_cart", "purchase")


@dataclass
class RecentInteraction:
    ts: int
    item_id: str
    type: str

    def sort_key(self) -> tuple[int, str, str]:
        return (self.ts, self.item_id, self.type)


@dataclass
class UserProfile:
    ref_ts: int = 0  # newest event ts applied (ms); decayed values are as of this time
    recent: list[RecentInteraction] = field(default_factory=list)  # oldest first, bounded
    affinities: dict[str, float] = field(default_factory=dict)  # category -> decayed weight at ref_ts
    vector: np.ndarray | None = None  # float16 decayed sum of item embeddings at ref_ts
    purchased: list[str] = field(default_factory=list)  # newest last, bounded, unique
    counts: dict[str, int] = field(default_factory=lambda: {name: 0 for name in INTERACTION_TYPES})
    last_seen: int = 0  # newest event ts (ms), same as ref_ts, kept explicit for readers
    click_times: list[int] = field(default_factory=list)  # recent click ts for the bot-rate rule
    seen_ids: list[tuple[bytes, int]] = field(default_factory=list)  # (8-byte event id prefix, ts) for dedup
    # Newest interactions per type, for co-visitation: one type's events come from one
    # partition in a fixed order, so pairs found here do not depend on other topics' timing.
    covisit_history: dict[str, list[RecentInteraction]] = field(default_factory=dict)
