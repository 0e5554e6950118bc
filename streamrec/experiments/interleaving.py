"""Team-draft interleaving (Radlinski, Kurup and Joachims, CIKM 2008).

Two rankers' lists are merged into one: in each round the team with fewer picks so far (a coin
toss when tied) adds its best item not already taken, and the item remembers its team. A click
credits the team of the clicked item; a user whose clicks favour one team is a win for it. As
every user sees both rankers at once, the comparison is paired within the user, which is why
interleaving usually needs far fewer users than an A/B test of the same two rankers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

Team = Literal["a", "b"]


def team_draft(a: Sequence[str], b: Sequence[str], k: int, rng: random.Random) -> list[tuple[str, Team]]:
    """Up to ``k`` items, each with the team that picked it."""
    picked: list[tuple[str, Team]] = []
    taken: set[str] = set()
    count = {"a": 0, "b": 0}
    position = {"a": 0, "b": 0}
    lists = {"a": a, "b": b}

    def next_free(team: Team) -> str | None:
        ranking = lists[team]
        while position[team] < len(ranking) and ranking[position[team]] in taken:
            position[team] += 1
        return ranking[position[team]] if position[team] < len(ranking) else None

    while len(picked) < k:
        free = {team: next_free(team) for team in ("a", "b")}
        if free["a"] is None and free["b"] is None:
            break
        if free["a"] is None:
            team: Team = "b"
        elif free["b"] is None:
            team = "a"
        elif count["a"] != count["b"]:
            team = "a" if count["a"] < count["b"] else "b"
        else:
            team = "a" if rng.random() < 0.5 else "b"
        item = free[team]
        assert item is not None
        picked.append((item, team))
        taken.add(item)
        count[team] += 1
    return picked


def credit(clicked_teams: Sequence[Team]) -> Team | None:
    """The team a user's clicks favour, or None for a tie (no clicks included)."""
    a = sum(team == "a" for team in clicked_teams)
    b = len(clicked_teams) - a
    return None if a == b else ("a" if a > b else "b")
