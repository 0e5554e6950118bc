"""Which list a user gets: the running experiment's variant, or the pipeline's default.

Under an A/B experiment a user's variant comes from hashing their id with the experiment's salt
(:meth:`Experiment.assign`: the same answer in every worker and replica, after any restart),
and the list is computed with that variant's ranking and labelled with it. Under an
interleaving experiment both rankings are computed and merged by team draft, each item marked
with its team; the coin tosses are seeded by the list's ``rec_id`` so that a list can be
recomputed exactly from its inputs. Each computed list is also a guardrail sample (time,
degraded, empty) for the experiment's report.
"""

from __future__ import annotations

import asyncio
import random
import time

from streamrec.experiments.definition import INTERLEAVED, NO_EXPERIMENT, Experiment
from streamrec.experiments.interleaving import team_draft
from streamrec.experiments.store import RunningExperiment
from streamrec.ranking.recommender import Outcome, Recommender
from streamrec.store.guardrails import ServedList


class VariantRouter:
    def __init__(self, recommender: Recommender, experiments: RunningExperiment, default_variant: str) -> None:
        self._recommender = recommender
        self._experiments = experiments
        self._default_variant = default_variant

    @property
    def experiment(self) -> Experiment | None:
        return self._experiments.current

    def labels(self, user_id: str) -> tuple[str | None, str]:
        """(experiment, variant) a list for ``user_id`` must carry now."""
        experiment = self.experiment
        if experiment is None:
            return None, self._default_variant
        return experiment.labels(user_id)

    async def recommend(self, user_id: str, **options) -> tuple[Outcome, ServedList]:
        """The user's list under the running experiment; ``options`` as :meth:`Recommender.recommend`."""
        started = time.perf_counter()
        experiment = self.experiment
        if experiment is None:
            outcome = await self._recommender.recommend(user_id, **options)
        elif experiment.kind == "ab":
            variant = experiment.assign(user_id)
            outcome = await self._recommender.recommend(user_id, ranking=variant.ranking, variant=variant.name,
                                                        experiment=experiment.name, model_version=variant.model_version,
                                                        **options)
        else:
            outcome = await self._interleave(experiment, user_id, options)
        lists = outcome.recommendations
        served = ServedList(lists.experiment or NO_EXPERIMENT, lists.variant, lists.degraded, not lists.items,
                            time.perf_counter() - started)
        return outcome, served

    async def _interleave(self, experiment: Experiment, user_id: str, options: dict) -> Outcome:
        a, b = experiment.variants
        first, second = await asyncio.gather(
            self._recommender.recommend(user_id, ranking=a.ranking, variant=a.name, experiment=experiment.name,
                                        model_version=a.model_version, **options),
            self._recommender.recommend(user_id, ranking=b.ranking, variant=b.name, experiment=experiment.name,
                                        model_version=b.model_version, **options),
        )
        one, two = first.recommendations, second.recommendations
        by_team = {"a": {item.item_id: item for item in one.items}, "b": {item.item_id: item for item in two.items}}
        rec_id = one.rec_id
        merged = team_draft([i.item_id for i in one.items], [i.item_id for i in two.items], len(one.items) or len(two.items),
                            random.Random(rec_id))
        items = [by_team[team][item_id].model_copy(update={"team": team}) for item_id, team in merged]
        reasons = [reason for reason in (one.degraded_reason, two.degraded_reason) if reason]
        recommendations = one.model_copy(update={
            "items": items,
            "variant": INTERLEAVED,
            "model_version": f"{one.model_version}|{two.model_version}",
            "degraded": one.degraded or two.degraded,
            "degraded_reason": "; ".join(reasons) or None,
            "source_event_ts": max((ts for ts in (one.source_event_ts, two.source_event_ts) if ts is not None), default=None),
        })
        return Outcome(recommendations, first.scorer_seconds, first.candidates, scored=first.scored, rows=first.rows, pool=first.pool)
