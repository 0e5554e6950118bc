"""Next-item examples, the shape every sequential dataset is turned into for the models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Example:
    """One user's history (oldest first, item indices) and the item that came next."""

    user: str
    history: tuple[int, ...]
    target: int


def train_sequences(examples: Sequence[Example]) -> list[tuple[int, ...]]:
    """The longest sequence per user (history + target): what co-visitation and popularity count."""
    longest: dict[str, tuple[int, ...]] = {}
    for example in examples:
        sequence = (*example.history, example.target)
        if len(sequence) > len(longest.get(example.user, ())):
            longest[example.user] = sequence
    return list(longest.values())
