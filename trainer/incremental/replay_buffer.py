"""A bounded reservoir of older training examples, mixed into each cycle against forgetting.

Fine-tuning only on the last few minutes of events would let the model forget what it knew
about everything else; each cycle therefore also trains on a sample of earlier examples.
The buffer is a uniform reservoir sample (Algorithm R) over every example ever added, stored
with the items' texts so it stays usable if the catalog drops an item. It is saved atomically
(write, then rename) only after a version is published, so a crashed cycle adds nothing and
the re-read events are not counted twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer.incremental.pairs import ItemText, TimedExample


@dataclass
class ReplayBuffer:
    capacity: int
    examples: list[TimedExample] = field(default_factory=list)
    items: dict[str, ItemText] = field(default_factory=dict)
    seen: int = 0
    """Examples offered so far (the reservoir's denominator)."""

    def add(self, new: Sequence[TimedExample], known: dict[str, ItemText], rng: np.random.Generator) -> None:
        for example in new:
            self.seen += 1
            if len(self.examples) < self.capacity:
                self.examples.append(example)
            else:
                slot = int(rng.integers(0, self.seen))
                if slot < self.capacity:
                    self.examples[slot] = example
                else:
                    continue
            for item in (*example.history, example.target):
                if item in known:
                    self.items[item] = known[item]
        self._drop_unused_items()

    def sample(self, count: int, rng: np.random.Generator) -> list[TimedExample]:
        if count <= 0 or not self.examples:
            return []
        chosen = rng.choice(len(self.examples), size=min(count, len(self.examples)), replace=False)
        return [self.examples[i] for i in sorted(chosen)]

    def _drop_unused_items(self) -> None:
        used = {item for e in self.examples for item in (*e.history, e.target)}
        self.items = {item: info for item, info in self.items.items() if item in used}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "capacity": self.capacity,
            "seen": self.seen,
            "items": {item: [info.title, info.text] for item, info in self.items.items()},
            "examples": [[e.user, list(e.history), e.target, e.ts] for e in self.examples],
        }
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        temporary.write_text(json.dumps(payload))
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path, capacity: int) -> "ReplayBuffer":
        """The saved buffer, or an empty one (missing or unreadable file: start over, never fail a cycle)."""
        try:
            payload = json.loads(path.read_text())
            buffer = cls(
                capacity=capacity,
                examples=[TimedExample(u, tuple(h), t, int(ts)) for u, h, t, ts in payload["examples"]][:capacity],
                items={item: ItemText(title, text) for item, (title, text) in payload["items"].items()},
                seen=int(payload["seen"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return cls(capacity=capacity)
        return buffer

    def __len__(self) -> int:
        return len(self.examples)
