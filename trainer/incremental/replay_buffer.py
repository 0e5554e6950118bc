"""The users' recent sequences, kept between cycles: their history, and replayed data against forgetting.

A user's history spans cycles: the next cycle's new events of a user continue the sequence kept
here. Fine-tuning only on the last few minutes of events would also let the model forget what it
knew about everyone else, so each cycle trains on a sample of the kept sequences of users without
new events too. The buffer keeps the ``capacity`` most recently active users, each with their
newest ``max_steps`` steps (the model reads no more).

It is saved atomically (write, then rename) only after a version is published, so a crashed or
rejected cycle adds nothing, and the events it re-reads are not counted twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer.incremental.sequences import Step


@dataclass
class ReplayBuffer:
    capacity: int
    max_steps: int = 50
    sequences: dict[str, list[Step]] = field(default_factory=dict)

    def update(self, sequences: Mapping[str, Sequence[Step]]) -> None:
        """Replace the kept sequences of these users, then keep the most recently active ``capacity``."""
        for user, steps in sequences.items():
            if steps:
                self.sequences[user] = list(steps)[-self.max_steps:]
        if len(self.sequences) > self.capacity:
            newest = sorted(self.sequences, key=lambda user: (self.sequences[user][-1].ts, user))[-self.capacity:] if self.capacity else []
            self.sequences = {user: self.sequences[user] for user in newest}

    def sample(self, count: int, rng: np.random.Generator, *, exclude: set[str] | frozenset[str] = frozenset()
               ) -> dict[str, list[Step]]:
        """Up to ``count`` kept sequences (of two steps or more) of users not in ``exclude``."""
        pool = sorted(user for user, steps in self.sequences.items() if user not in exclude and len(steps) >= 2)
        if count <= 0 or not pool:
            return {}
        chosen = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
        return {pool[i]: self.sequences[pool[i]] for i in sorted(chosen)}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"capacity": self.capacity, "max_steps": self.max_steps,
                   "sequences": {user: [[s.item, s.type, s.ts] for s in steps] for user, steps in self.sequences.items()}}
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        temporary.write_text(json.dumps(payload))
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path, capacity: int, max_steps: int = 50) -> ReplayBuffer:
        """The saved buffer, or an empty one (missing or unreadable file: start over, never fail a cycle)."""
        try:
            payload = json.loads(path.read_text())
            sequences = {str(user): [Step(str(item), str(kind), int(ts)) for item, kind, ts in steps]
                         for user, steps in payload["sequences"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls(capacity=capacity, max_steps=max_steps)
        buffer = cls(capacity=capacity, max_steps=max_steps)
        buffer.update(sequences)
        return buffer

    def __len__(self) -> int:
        return len(self.sequences)
