"""Assignment (stable, no state, close to the shares) and team-draft interleaving."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter

import pytest
from pydantic import ValidationError

from streamrec.experiments.definition import Experiment, Variant
from streamrec.experiments.interleaving import credit, team_draft


def experiment(**overrides) -> Experiment:
    return Experiment(**{"name": "rank-1", "salt": "s1", "variants": [
        Variant(name="control", ranking="popularity", share=0.3), Variant(name="bert", ranking="full", share=0.7)], **overrides})


def test_assignment_follows_the_shares_and_a_new_salt_reshuffles_users():
    users = [f"u{n}" for n in range(20_000)]
    counts = Counter(experiment().assign(user).name for user in users)
    assert counts["control"] == pytest.approx(6000, abs=300)
    other = experiment(salt="s2")
    moved = sum(experiment().assign(u).name != other.assign(u).name for u in users)
    assert moved == pytest.approx(20_000 * 2 * 0.3 * 0.7, rel=0.1)  # independent draws under the new salt


def test_assignment_is_the_same_in_another_process():
    users = [f"user-{n}" for n in range(200)] + ["用户", "a:b", "x" * 256]
    here = [experiment().assign(user).name for user in users]
    code = ("import json,sys; from streamrec.experiments.definition import Experiment;"
            "e = Experiment.model_validate_json(sys.argv[1]); print(json.dumps([e.assign(u).name for u in json.loads(sys.argv[2])]))")
    import json
    there = subprocess.run([sys.executable, "-c", code, experiment().model_dump_json(), json.dumps(users)],
                           capture_output=True, text=True, check=True).stdout
    assert json.loads(there) == here


@pytest.mark.parametrize("bad", [
    {"variants": [Variant(name="a", ranking="full", share=0.5), Variant(name="b", ranking="full", share=0.4)]},
    {"variants": [Variant(name="a", ranking="full", share=0.5), Variant(name="a", ranking="signals", share=0.5)]},
    {"kind": "interleaving", "variants": [Variant(name="a", ranking="full"), Variant(name="b", ranking="covisit"),
                                          Variant(name="c", ranking="popularity")]},
    {"name": "has space"},
])
def test_inconsistent_definitions_are_refused(bad):
    with pytest.raises(ValidationError):
        experiment(**bad)


def test_team_draft_takes_turns_keeps_each_rankers_order_and_never_repeats_an_item():
    a = ["1", "2", "3", "4", "5", "6"]
    b = ["3", "7", "1", "8", "9", "2"]
    for seed in range(50):
        merged = team_draft(a, b, 6, random.Random(seed))
        items = [item for item, _ in merged]
        assert len(items) == len(set(items)) == 6
        teams = Counter(team for _, team in merged)
        assert abs(teams["a"] - teams["b"]) <= 1  # picks alternate in pairs
        for team, ranking in (("a", a), ("b", b)):
            picked = [item for item, t in merged if t == team]
            assert picked == sorted(picked, key=ranking.index)  # each team in its ranker's order
        # After every pair of picks each team has picked once.
        for end in range(2, 7, 2):
            assert Counter(t for _, t in merged[:end]) == {"a": end // 2, "b": end // 2}


def test_team_draft_of_identical_rankers_is_that_ranking_and_clicks_are_credited_by_team():
    ranking = [str(n) for n in range(10)]
    assert [item for item, _ in team_draft(ranking, ranking, 10, random.Random(3))] == ranking
    assert credit(["a", "b", "b"]) == "b" and credit(["a", "b"]) is None and credit([]) is None
    assert len(team_draft(["1"], ["2"], 5, random.Random(0))) == 2  # runs out of items


def test_a_pinned_model_version_needs_the_sequence_model_and_parses_from_the_cli_form():
    from streamrec.experiments.cli import parse_variant

    assert parse_variant("new=full@7:0.25", default_share=0.5) == Variant(name="new", ranking="full", share=0.25, model_version=7)
    assert parse_variant("old=full", default_share=0.5).model_version is None
    with pytest.raises(ValidationError, match="does not use"):
        Variant(name="v", ranking="covisit", share=0.5, model_version=3)
