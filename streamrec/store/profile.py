"""The user profile: one compact, bounded msgpack value per user.

Decayed quantities (category affinities, the profile vector) are stored as
their value at ``ref_ts`` (the newest event time seen); reading them at time
``t`` multiplies by ``decay(t - ref_ts)``. Keeping the reference at the newest
event makes an out-of-order (older) event a plain weighted add, so the result
does not depend on the order in which topics deliver a user's events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack
import numpy as np

# Interaction type codes inside the compact recent-interactions list.
TYPE_CODES = {"click": 0, "add_to_cart": 1, "purchase": 2}
TYPE_NAMES = {code: name for name, code in TYPE_CODES.items()}
FORMAT_VERSION = 2


class ProfileFormatError(ValueError):
    """A stored profile this code cannot read (another format version, or corrupt)."""


@dataclass
class Interaction:
    ts: int
    item_id: str
    type: str

    def sort_key(self) -> tuple[int, str, str]:
        return (self.ts, self.item_id, self.type)


@dataclass
class UserProfile:
    ref_ts: int = 0  # newest event ts applied (ms); decayed values are as of this time
    recent: list[Interaction] = field(default_factory=list)  # oldest first, bounded
    affinities: dict[str, float] = field(default_factory=dict)  # category -> decayed weight at ref_ts
    vector: np.ndarray | None = None  # float16 decayed sum of item embeddings at ref_ts
    purchased: list[str] = field(default_factory=list)  # newest last, bounded, unique
    counts: dict[str, int] = field(default_factory=lambda: {name: 0 for name in TYPE_CODES})
    last_seen: int = 0  # newest event ts (ms), same as ref_ts, kept explicit for readers
    click_times: list[int] = field(default_factory=list)  # recent click ts for the bot-rate rule
    seen_ids: list[tuple[bytes, int]] = field(default_factory=list)  # (8-byte event id prefix, ts) for dedup
    # Newest interactions per type, for co-visitation: one type's events come from one
    # partition in a fixed order, so pairs found here do not depend on other topics' timing.
    covisit_history: dict[str, list[Interaction]] = field(default_factory=dict)

    def encode(self) -> bytes:
        """Timestamps are stored as offsets from ``ref_ts`` (small integers pack into fewer bytes)."""
        ref = self.ref_ts
        return msgpack.packb(
            {
                "f": FORMAT_VERSION,
                "t": ref,
                "r": [[ref - i.ts, i.item_id, TYPE_CODES[i.type]] for i in self.recent],
                "a": self.affinities,
                "v": None if self.vector is None else self.vector.astype(np.float16).tobytes(),
                "p": self.purchased,
                "n": [self.counts[name] for name in TYPE_CODES],
                "s": ref - self.last_seen,
                "k": [ref - ts for ts in self.click_times],
                "d": [b"".join(event_id for event_id, _ in self.seen_ids), [ref - ts for _, ts in self.seen_ids]],
                "c": {t: [[ref - i.ts, i.item_id] for i in h] for t, h in self.covisit_history.items()},
            },
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, raw: bytes | None) -> "UserProfile":
        if raw is None:
            return cls()
        try:
            data = msgpack.unpackb(raw, raw=False)
            version = data.get("f") if isinstance(data, dict) else None
        except (ValueError, msgpack.UnpackException) as error:
            raise ProfileFormatError(f"unreadable profile: {error}") from None
        if version != FORMAT_VERSION:
            raise ProfileFormatError(f"profile format {version!r}, this code reads {FORMAT_VERSION}")
        ref = data["t"]
        id_bytes, id_offsets = data["d"]
        return cls(
            ref_ts=ref,
            recent=[Interaction(ref - offset, item_id, TYPE_NAMES[code]) for offset, item_id, code in data["r"]],
            affinities=dict(data["a"]),
            vector=None if data["v"] is None else np.frombuffer(data["v"], dtype=np.float16).copy(),
            purchased=list(data["p"]),
            counts=dict(zip(TYPE_CODES, data["n"], strict=True)),
            last_seen=ref - data["s"],
            click_times=[ref - offset for offset in data["k"]],
            seen_ids=[(id_bytes[8 * k : 8 * k + 8], ref - offset) for k, offset in enumerate(id_offsets)],
            covisit_history={
                kind: [Interaction(ref - offset, item_id, kind) for offset, item_id in history]
                for kind, history in data["c"].items()
            },
        )
