"""A simulated shop that proves the evaluation system end to end: A/B, interleaving, A/A, attribution.

Simulated shoppers are real Amazon Scientific users whose next purchase is known and was never
trained on: each takes a row of ``Scientific.valid.inter`` (their history, then the item that
came next), on top of a real stack (an isolated Kafka, Redis and Triton; the real MiniLM item
encoder; the sequence BERT trained on the training sequences) with the collector, the streams
worker, the recs worker and the attribution worker as processes. Every shopper

1. sends the last 15 items of their history as clicks through the collector (HTTP);
2. waits for their list from the recs worker (the one cached in Redis, labelled with the running
   experiment and their variant);
3. is shown its first 10 items, sends an impression, and clicks each shown item with probability
   ``position bias x relevance``: bias ``1 / log2(position + 2)``; relevance 0.6 for their real
   next item, 0.25 x the item's text similarity to it above 0.5 (scaled to 0..1), plus 0.02 for
   anything, times the shopper's own propensity to click (drawn once per shopper from a gamma
   distribution with mean 1 and shape 0.5: real shoppers differ widely in how much they click,
   and that spread between users is what an A/B test must average out and interleaving cancels);
   a click on the real next item becomes a purchase (25.00) half the time. Clicks and
   purchases carry the list's ``rec_id``, variant, experiment and, in an interleaved list, the
   item's team.

Experiments (the first variant is the control):

* **A/B**: ``popular`` (short-term popularity only) against ``bert`` (the whole pipeline),
  50/50. ``ab_detects_better`` is 1 when the report, read once at the planned size (the end of
  the run), shows ``bert``'s click-through rate higher with a fixed-horizon p below 0.05, in
  every repeat; ``ab_detects_better_always_valid`` is the share of repeats where the always-valid
  p (the one to trust when looking at any time) is below 0.05 as well. The attribution worker is killed with
  SIGKILL halfway through and restarted.
* **Interleaving**: the same two rankers team-drafted into one list for another set of shoppers.
* Users to significance, for both, two ways. **Projected** (``*_users_to_significance``): from
  the test's z at the end of the run (A/B: the fixed-horizon CTR difference; interleaving: the
  sign test of wins), the users at which the expected z reaches 1.96, ``n (1.96 / z)²`` (z grows
  with the square root of the users); this is the comparison the targets read, as it is not at
  the mercy of one early fluke. **Observed** (``*_users_observed``): users in arrival order,
  checked every 25 users; the first checkpoint from which the test stays below 0.05 with
  ``bert`` ahead at every later checkpoint (the always-valid A/B figure is reported too).
* **A/A**: ``aa_false_positive_rate`` over 500 A/A experiments replayed offline on the A/B run's
  per-user counts, 250 within each arm (each arm's users split by a fresh salt, the report's own
  statistics at the end, alpha 0.05, the CTR difference). Target ≤ 0.07.
* **Attribution exactness**: the counts in Redis equal those worked out from what the shoppers
  sent (the collector acknowledged every event) after the kill: ``attribution_mismatches`` = 0.

The whole is repeated (default 3 times, on one stack): each repeat takes the shoppers in another
order under new ids, with a new salt and new coin tosses; the result is the median over repeats
(attribution mismatches: the sum; ``ab_detects_better``: every repeat). ``--quick`` runs one
repeat with fewer shoppers and trains the scorer for fewer epochs. The first repeat's p-value
curves go to ``docs/images/experiments-significance.png`` and its A/B report, as
``streamrec experiments report`` prints it, to ``docs/images/experiment-report.svg``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import isolated_stack, machine, verdict, write_json  # noqa: E402
from benchmarks.pipeline import MODELS, Pipeline  # noqa: E402
from streamrec.datasets.amazon_pairs import VALID_FILE, load_catalog as load_pairs_catalog, load_examples  # noqa: E402
from streamrec.datasets.loaders import load  # noqa: E402
from streamrec.datasets.replay import replay_dataset  # noqa: E402
from streamrec.experiments.definition import INTERLEAVED, Experiment, Variant, unit_hash  # noqa: E402
from streamrec.experiments.cli import print_report as print_experiment_report  # noqa: E402
from streamrec.experiments.report import UserRows, build_report, compare  # noqa: E402
from streamrec.experiments.statistics import difference, interleaving_test  # noqa: E402
from streamrec.experiments.store import ExperimentStore  # noqa: E402
from streamrec.kafka_admin import commit_groups_at_end  # noqa: E402
from streamrec.lag import LagReader  # noqa: E402
from streamrec.messages import Recommendations  # noqa: E402
from streamrec.model.bootstrap import init_item_encoder  # noqa: E402
from streamrec.settings import REPO_ROOT, Settings  # noqa: E402
from streamrec.store import layout  # noqa: E402
from streamrec.store.attribution import METRICS, AttributionStore  # noqa: E402
from streamrec.store.connection import connect, connect_blocking  # noqa: E402
from streamrec.store.guardrails import Guardrails  # noqa: E402
from streamrec.topics import INTERACTION_TOPICS, Topic  # noqa: E402

DATA_DIR = REPO_ROOT.parent / "shared" / "data"
SHOWN = 10
HISTORY = 15
PRICE = 25.0
CHECK_EVERY = 25
PROPENSITY_SHAPE = 0.5  # shoppers' propensity to click: gamma, mean 1 (0 here means every shopper alike)
AA_RUNS = 500
TARGETS = {"ab_detects_better": 1, "aa_false_positive_rate": 0.07, "attribution_mismatches": 0,
           "interleaving_over_ab_users": 1.0}
LOWER = frozenset({"aa_false_positive_rate", "attribution_mismatches", "interleaving_over_ab_users"})
console = Console(highlight=False)


class ShopPipeline(Pipeline):
    """The benchmark pipeline's processes plus the attribution worker (no API: shoppers read their
    lists as the recs worker cached them)."""

    NAMES = ("collector", "streams", "recs", "attribution", "api")
    ARGS = {**Pipeline.ARGS, "attribution": ["streams", "attribution"]}
    STARTED = ("collector", "streams", "recs", "attribution")

    def __init__(self, settings: Settings, logs: Path) -> None:
        super().__init__(settings, logs)
        self.attribution_group = f"bench-attribution-{uuid.uuid4().hex[:6]}"
        self.env.update({
            "STREAMREC_ATTRIBUTION__APP_ID": self.attribution_group,
            "STREAMREC_ATTRIBUTION__WEB_PORT": str(self.ports["attribution"]),
            "STREAMREC_ATTRIBUTION__SESSION_TIMEOUT_S": "6",
            "STREAMREC_RECS__EXPERIMENTS_REFRESH_S": "0.5",
            "STREAMREC_RECS__SCORER_BUDGET_MS": "3000",  # a loaded 2-core machine; degraded lists are a guardrail
        })

    def up(self, names: tuple[str, ...] = STARTED) -> None:
        commit_groups_at_end(self.settings.kafka, {
            self.streams_group: [t.value for t in (*INTERACTION_TOPICS, Topic.CATALOG)],
            self.recs_group: [Topic.PROFILES_UPDATED.value],
            self.attribution_group: [Topic.IMPRESSIONS.value, Topic.ACCEPTED.value],
        })
        for name in names:
            self.start(name)
        self.processes["collector"].wait_http(f"{self.collector_url}/healthz", timeout_s=120)
        for name in ("streams", "recs", "attribution"):
            self.processes[name].wait_http(f"http://127.0.0.1:{self.ports[name]}/metrics", timeout_s=180)


@dataclass(frozen=True)
class Shopper:
    user: str
    history: tuple[str, ...]
    target: str


@dataclass
class Ledger:
    """What the shoppers sent, as the attribution rules count it: (variant, metric) -> user -> value."""

    counts: dict[tuple[str, str], dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    order: list[str] = field(default_factory=list)  # users in the order their outcome was sent
    degraded: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, variant: str, metric: str, user: str, value: float = 1.0) -> None:
        self.counts[(variant, metric)][user] += value


class ClickModel:
    def __init__(self, vectors: dict[str, np.ndarray], propensity_shape: float = PROPENSITY_SHAPE) -> None:
        self.vectors = vectors
        self.propensity_shape = propensity_shape

    def propensity(self, rng: random.Random) -> float:
        shape = self.propensity_shape
        return rng.gammavariate(shape, 1 / shape) if shape > 0 else 1.0

    def probability(self, item: str, position: int, target: str, propensity: float = 1.0) -> float:
        bias = 1 / math.log2(position + 2)
        if item == target:
            return min(1.0, propensity * bias * 0.62)
        a, b = self.vectors.get(item), self.vectors.get(target)
        similarity = float(a @ b) if a is not None and b is not None else 0.0
        return min(1.0, propensity * bias * (0.02 + 0.25 * max(0.0, (similarity - 0.5) / 0.5)))


def shoppers(data_dir: Path, seed: int = 0) -> list[Shopper]:
    catalog = load_pairs_catalog(data_dir)
    rows = load_examples(data_dir / "amazon_scientific" / VALID_FILE)
    found = [Shopper(f"sim-{row.user}", tuple(catalog.item_ids[i] for i in row.history[-HISTORY:]), catalog.item_ids[row.target])
             for row in rows if len(row.history) >= 2]
    random.Random(seed).shuffle(found)
    return found


def item_vectors(settings: Settings) -> dict[str, np.ndarray]:
    client = connect_blocking(settings.redis)
    try:
        items = [member.decode() for member in client.zrange(layout.CATALOG_CHANGES_KEY, 0, -1)]
        values = client.pipeline(transaction=False)
        for item in items:
            values.hget(layout.item_key(item), "emb")
        found = {}
        for item, raw in zip(items, values.execute(), strict=True):
            if raw:
                vector = np.frombuffer(raw, np.float16).astype(np.float32)
                found[item] = vector / max(np.linalg.norm(vector), 1e-9)
        return found
    finally:
        client.close()


def post(client: httpx.Client, url: str, events: list[dict]) -> None:
    """POST until the collector accepted every event (a 503 is retried with the same event ids)."""
    for attempt in range(60):
        response = client.post(f"{url}/v1/events", content=orjson.dumps(events))
        if response.status_code == 202 and response.json()["accepted"] == len(events):
            return
        time.sleep(min(0.1 * 2**attempt, 2.0))
    raise RuntimeError(f"the collector did not accept a batch: {response.status_code} {response.text[:300]}")


def wait_for_list(redis_client, user: str, newest_ts: int, experiment: str, timeout_s: float = 120) -> Recommendations:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        raw = redis_client.get(layout.recommendations_key(user))
        if raw is not None:
            found = Recommendations.decode(raw)
            if found.experiment == experiment and (found.source_event_ts or 0) >= newest_ts:
                return found
        time.sleep(0.05)
    raise RuntimeError(f"no list for {user} under {experiment} within {timeout_s:.0f} s")


def visit(shopper: Shopper, experiment: str, url: str, redis_client, http: httpx.Client, model: ClickModel,
          ledger: Ledger, seed: int) -> None:
    rng = random.Random(seed)
    propensity = model.propensity(rng)
    start = int(time.time() * 1000)
    post(http, url, [{"type": "click", "user_id": shopper.user, "item_id": item, "ts": start + k, "session_id": shopper.user}
                     for k, item in enumerate(shopper.history)])
    shown = wait_for_list(redis_client, shopper.user, start + len(shopper.history) - 1, experiment)
    items = shown.items[:SHOWN]
    now = int(time.time() * 1000)
    context = {"rec_id": shown.rec_id, "variant": shown.variant, "experiment": experiment}
    events = [{"type": "impression", "user_id": shopper.user, "rec_id": shown.rec_id, "variant": shown.variant,
               "experiment": experiment, "ts": now,
               "items": [{"item_id": item.item_id, "position": p, **({"team": item.team} if item.team else {})}
                         for p, item in enumerate(items)]}]
    outcome: list[tuple[str, float]] = [("impressions", 1), ("items_shown", len(items))]
    for position, item in enumerate(items):
        if rng.random() >= model.probability(item.item_id, position, shopper.target, propensity):
            continue
        events.append({"type": "click", "user_id": shopper.user, "item_id": item.item_id, "ts": now + 1 + position,
                       "context": {**context, "position": position}})
        outcome.append(("clicks", 1))
        if item.team:
            outcome.append((f"clicks_{item.team}", 1))
        if item.item_id == shopper.target and rng.random() < 0.5:
            events.append({"type": "purchase", "user_id": shopper.user, "item_id": item.item_id, "order_id": uuid.uuid4().hex,
                           "price": PRICE, "currency": "EUR", "ts": now + 20 + position, "context": context})
            outcome += [("purchases", 1), ("revenue", PRICE)]
    post(http, url, events)
    with ledger.lock:
        for metric, value in outcome:
            ledger.add(shown.variant, metric, shopper.user, value)
        ledger.order.append(shopper.user)
        ledger.degraded += shown.degraded


def run_experiment(pipeline: ShopPipeline, experiment: Experiment, crowd: list[Shopper], model: ClickModel,
                   concurrency: int, kill_attribution_at: int | None = None) -> Ledger:
    settings = pipeline.settings

    async def create() -> None:
        client = connect(settings.redis)
        try:
            await ExperimentStore(client).create(experiment)
        finally:
            await client.aclose()

    asyncio.run(create())
    time.sleep(1.5)  # every recs worker reads the running experiment within recs.experiments_refresh_s
    ledger = Ledger()
    redis_client = connect_blocking(settings.redis)
    done = 0
    started = time.monotonic()
    with httpx.Client(timeout=30) as http, ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(visit, shopper, experiment.name, pipeline.collector_url, redis_client, http, model, ledger, n)
                   for n, shopper in enumerate(crowd)]
        for future in futures:
            future.result()
            done += 1
            if kill_attribution_at is not None and done == kill_attribution_at:
                pipeline.restart("attribution")
                console.print(f"  · attribution worker killed (SIGKILL) and restarted after {done} shoppers")
            if done % 100 == 0:
                console.print(f"  · {experiment.name}: {done}/{len(crowd)} shoppers, {done / (time.monotonic() - started):.1f}/s")

    async def stop() -> None:
        client = connect(settings.redis)
        try:
            await ExperimentStore(client).stop(experiment.name)
        finally:
            await client.aclose()

    asyncio.run(stop())
    redis_client.close()
    return ledger


def wait_attributed(settings: Settings, group: str, timeout_s: float = 300) -> None:
    reader = LagReader(settings.kafka)
    topics = [Topic.IMPRESSIONS.value, Topic.ACCEPTED.value]
    deadline = time.monotonic() + timeout_s
    try:
        time.sleep(3)  # the streams worker publishes events.accepted after its own batch
        while time.monotonic() < deadline:
            rows = [row for row in reader.read([group], sample_s=0, topics=topics)]
            if rows and all(row.lag == 0 for row in rows):
                return
            time.sleep(1)
    finally:
        reader.close()
    raise RuntimeError(f"the attribution worker did not catch up within {timeout_s:.0f} s")


def stored_rows(settings: Settings, experiment: str, variants: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """variant -> metric -> user -> value, as the report reads them."""
    async def read():
        client = connect(settings.redis)
        try:
            return {variant: await AttributionStore(client).counts(experiment, variant) for variant in variants}
        finally:
            await client.aclose()

    return asyncio.run(read())


def mismatches(ledger: Ledger, stored: dict[str, dict[str, dict[str, float]]]) -> int:
    """Users whose stored counts differ from the ledger's in any metric."""
    wrong = set()
    for variant, per_metric in stored.items():
        for metric in METRICS:
            expected = ledger.counts.get((variant, metric), {})
            found = per_metric[metric]
            for user in set(expected) | set(found):
                if abs(expected.get(user, 0.0) - found.get(user, 0.0)) > 1e-9:
                    wrong.add(user)
    return len(wrong)


def projected_users(n: int, p: float) -> float:
    """Users at which the expected z of a test that gave ``p`` after ``n`` users reaches 1.96."""
    from scipy import stats

    z = float(stats.norm.isf(max(p, 1e-300) / 2))
    return n * (1.959964 / z) ** 2 if z > 0 else math.inf


def first_stable(checkpoints: list[tuple[int, float, bool]]) -> float:
    """The first n from which every later checkpoint has p < 0.05 with the treatment ahead."""
    answer = math.nan
    for n, p, ahead in reversed(checkpoints):
        if p < 0.05 and ahead:
            answer = n
        else:
            break
    return answer


def ab_curve(stored: dict[str, dict[str, dict[str, float]]], order: list[str], assigned: dict[str, str]):
    curve = []
    for n in range(CHECK_EVERY, len(order) + 1, CHECK_EVERY):
        users = order[:n]
        control = [u for u in users if assigned[u] == "popular"]
        treatment = [u for u in users if assigned[u] == "bert"]
        if len(control) < 2 or len(treatment) < 2:
            continue
        a = UserRows.from_counts(stored["popular"], control).estimates()["ctr"]
        b = UserRows.from_counts(stored["bert"], treatment).estimates()["ctr"]
        d = difference(b, a)
        curve.append((n, d.p_value, d.always_valid_p, d.value > 0))
    return curve


def interleaving_curve(stored: dict[str, dict[str, float]], order: list[str]):
    curve = []
    a_clicks = np.array([stored["clicks_a"].get(u, 0.0) for u in order])
    b_clicks = np.array([stored["clicks_b"].get(u, 0.0) for u in order])
    for n in range(CHECK_EVERY, len(order) + 1, CHECK_EVERY):
        a, b = a_clicks[:n], b_clicks[:n]
        result = interleaving_test(int((a > b).sum()), int((b > a).sum()), int(((a == b) & (a + b > 0)).sum()))
        curve.append((n, result.p_value, result.preference_b > 0))
    return curve


def aa_false_positive_rate(stored: dict[str, dict[str, float]], users: list[str], runs: int = AA_RUNS) -> tuple[float, float]:
    """(share of A/A splits with fixed-horizon p < 0.05, the same for the always-valid p) on one arm's users."""
    aa = Experiment(name="aa", salt="x", variants=[Variant(name="a", ranking="popularity", share=0.5),
                                                   Variant(name="b", ranking="popularity", share=0.5)])
    fixed = valid = 0
    empty = Guardrails(0, 0, 0, 0.0)
    for run in range(runs):
        salt = f"aa-{run}"
        halves = {"a": [u for u in users if unit_hash(salt, u) < 0.5], "b": [u for u in users if unit_hash(salt, u) >= 0.5]}
        report = compare(aa, {name: UserRows.from_counts(stored, members) for name, members in halves.items()}, {"a": empty, "b": empty})
        d = report.variants[1].versus_control["ctr"]
        fixed += d.p_value < 0.05
        valid += d.always_valid_p < 0.05
    return fixed / runs, valid / runs


def plot(ab, interleaving, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, axis = plt.subplots(figsize=(8, 4.2))
    if ab:
        axis.plot([n for n, *_ in ab], [max(p, 1e-12) for _, p, _, _ in ab], label="A/B, CTR difference (fixed horizon)")
        axis.plot([n for n, *_ in ab], [max(p, 1e-12) for _, _, p, _ in ab], label="A/B, always-valid (mSPRT)")
    if interleaving:
        axis.plot([n for n, *_ in interleaving], [max(p, 1e-12) for _, p, _ in interleaving], label="interleaving, sign test")
    axis.axhline(0.05, color="grey", linestyle="--", linewidth=1)
    axis.set_yscale("log")
    axis.set_xlabel("shoppers so far")
    axis.set_ylabel("p-value (bert vs popularity)")
    axis.set_title("Simulated shop: when does each method tell the better ranker?")
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def save_report_picture(settings: Settings, name: str, path: Path) -> None:
    """`streamrec experiments report NAME` as it prints, saved as an SVG for the README."""
    async def read():
        client = connect(settings.redis)
        try:
            experiment = await ExperimentStore(client).get(name)
            return await build_report(client, experiment)
        finally:
            await client.aclose()

    recording = Console(record=True, width=200, highlight=False)
    print_experiment_report(asyncio.run(read()), recording)
    path.parent.mkdir(parents=True, exist_ok=True)
    recording.save_svg(str(path), title=f"streamrec experiments report {name}")


def train_models(repo: Path, epochs: int) -> None:
    """The project's model configs, the real MiniLM encoder and a sequence scorer trained here."""
    for model in MODELS:
        (repo / model).mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / "model_repo" / model / "config.pbtxt", repo / model / "config.pbtxt")
    init_item_encoder(repo)
    command = [sys.executable, "-m", "streamrec", "trainer", "train-sequence", "--dataset", "amazon_scientific",
               "--data-dir", str(DATA_DIR), "--out", str(repo), "--epochs", str(epochs)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"training the sequence scorer failed:\n{(done.stdout + done.stderr)[-3000:]}")
    console.print(f"  · {done.stdout.strip().splitlines()[-1]}")


@dataclass
class Repeat:
    """One repeat's two experiments: what was sent and what Redis counted."""

    ab: Experiment
    ab_ledger: Ledger
    ab_stored: dict[str, dict[str, dict[str, float]]]
    il_ledger: Ledger
    il_stored: dict[str, dict[str, dict[str, float]]]


def analyse(run: Repeat) -> tuple[dict[str, float], list, list]:
    """(metrics, A/B p-value curve, interleaving p-value curve) of one repeat."""
    ab, ab_ledger, ab_stored = run.ab, run.ab_ledger, run.ab_stored
    assigned = {user: ab.assign(user).name for user in ab_ledger.order}
    ab_points = ab_curve(ab_stored, ab_ledger.order, assigned)
    il_points = interleaving_curve(run.il_stored[INTERLEAVED], run.il_ledger.order)
    final, final_il = ab_points[-1], il_points[-1]
    ab_users = projected_users(final[0], final[1]) if final[3] else math.inf
    il_users = projected_users(final_il[0], final_il[1]) if final_il[2] else math.inf
    members = {name: [u for u in ab_ledger.order if assigned[u] == name] for name in ("popular", "bert")}
    # A/A splits within each arm (one population each), half of the runs per arm.
    aa = [aa_false_positive_rate(ab_stored[name], users, AA_RUNS // 2) for name, users in members.items()]
    aa_fixed, aa_valid = (sum(rates) / len(rates) for rates in zip(*aa, strict=True))
    ctr = {name: UserRows.from_counts(ab_stored[name], users).estimates()["ctr"].value for name, users in members.items()}
    shown = len(ab_ledger.order) + len(run.il_ledger.order)
    metrics = {
        "ab_detects_better": float(final[1] < 0.05 and final[3]),
        "ab_detects_better_always_valid": float(final[2] < 0.05 and final[3]),
        "ab_users_to_significance": ab_users,
        "interleaving_users_to_significance": il_users,
        "interleaving_over_ab_users": il_users / ab_users if ab_users else math.nan,
        "ab_users_observed": first_stable([(n, p, ahead) for n, p, _, ahead in ab_points]),
        "ab_users_observed_always_valid": first_stable([(n, p, ahead) for n, _, p, ahead in ab_points]),
        "interleaving_users_observed": first_stable(il_points),
        "aa_false_positive_rate": aa_fixed,
        "aa_false_positive_rate_always_valid": aa_valid,
        "attribution_mismatches": float(mismatches(ab_ledger, ab_stored) + mismatches(run.il_ledger, run.il_stored)),
        "ab_ctr_popular": ctr["popular"],
        "ab_ctr_bert": ctr["bert"],
        "ab_final_p": final[1],
        "ab_final_p_always_valid": final[2],
        "interleaving_final_p": final_il[1],
        "degraded_lists_share": (ab_ledger.degraded + run.il_ledger.degraded) / max(1, shown),
    }
    return metrics, ab_points, il_points


COUNTS = ("ab_users_to_significance", "interleaving_users_to_significance", "ab_users_observed",
          "ab_users_observed_always_valid", "interleaving_users_observed",
          "attribution_mismatches", "shoppers_per_experiment", "repeats", "duration_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer shoppers, one repeat, fewer training epochs")
    parser.add_argument("--json", help="write the metrics here")
    parser.add_argument("--shoppers", type=int, default=None, help="shoppers per experiment (default 1,200; quick 500)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats on one stack (default 3; quick 1)")
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--propensity-shape", type=float, default=PROPENSITY_SHAPE,
                        help="gamma shape of the shoppers' propensity to click (0: every shopper alike)")
    parser.add_argument("--plot", default=str(REPO_ROOT / "docs" / "images" / "experiments-significance.png"))
    parser.add_argument("--report-picture", default=str(REPO_ROOT / "docs" / "images" / "experiment-report.svg"))
    args = parser.parse_args()
    facts = machine()
    console.print(f"machine: {facts['cpu']} ({facts['cpu_flags']}), {facts['cores']} cores, {facts['memory_gb']} GB")
    per_experiment = args.shoppers or (500 if args.quick else 1200)
    repeats = args.repeats or (1 if args.quick else 3)
    available = len(shoppers(DATA_DIR))
    if available < 2 * per_experiment:
        raise SystemExit(f"too few shoppers in {VALID_FILE}: ask for at most {available // 2} per experiment")
    dataset = load("amazon_scientific", DATA_DIR)
    started = time.monotonic()
    runs: list[Repeat] = []
    with tempfile.TemporaryDirectory(prefix="streamrec-experiments-") as folder:
        folder = Path(folder)
        repo = folder / "model_repo"
        console.print("training the sequence scorer on the training sequences (the shoppers' next items held out)")
        train_models(repo, epochs=3 if args.quick else 6)
        with isolated_stack(say=console.print, model_repo=repo, triton_load_models=MODELS, start_timeout_s=600) as settings:
            pipeline = ShopPipeline(settings, folder / "logs")
            pipeline.up()
            try:
                console.print("replaying the catalog and the training sequences (co-visitation, popularity)")
                replay_dataset(settings, "amazon_scientific", data_dir=DATA_DIR, dataset=replace(dataset, events=[]))
                client = connect_blocking(settings.redis)
                deadline = time.monotonic() + 900
                while client.zcard(layout.CATALOG_CHANGES_KEY) < len(dataset.catalog) and time.monotonic() < deadline:
                    time.sleep(1)
                client.close()
                replay_dataset(settings, "amazon_scientific", data_dir=DATA_DIR, dataset=replace(dataset, catalog=[]))
                model = ClickModel(item_vectors(settings), args.propensity_shape)
                for repeat in range(1, repeats + 1):
                    # Each repeat: the shoppers in another order under new ids, a new salt, new coin tosses.
                    crowd = [replace(s, user=f"r{repeat}-{s.user}") for s in shoppers(DATA_DIR, seed=repeat)]
                    ab = Experiment(name=f"bert-vs-popular-{repeat}", salt=uuid.uuid4().hex, variants=[
                        Variant(name="popular", ranking="popularity", share=0.5), Variant(name="bert", ranking="full", share=0.5)])
                    console.print(f"repeat {repeat}, A/B: {per_experiment} shoppers")
                    ab_ledger = run_experiment(pipeline, ab, crowd[:per_experiment], model, args.concurrency,
                                               kill_attribution_at=per_experiment // 2)
                    il = Experiment(name=f"bert-vs-popular-interleaved-{repeat}", kind="interleaving", salt=uuid.uuid4().hex,
                                    variants=[Variant(name="popular", ranking="popularity"), Variant(name="bert", ranking="full")])
                    console.print(f"repeat {repeat}, interleaving: {per_experiment} other shoppers")
                    il_ledger = run_experiment(pipeline, il, crowd[per_experiment:2 * per_experiment], model, args.concurrency)
                    wait_attributed(settings, pipeline.attribution_group)
                    runs.append(Repeat(ab, ab_ledger, stored_rows(settings, ab.name, ["popular", "bert"]),
                                       il_ledger, stored_rows(settings, il.name, [INTERLEAVED])))
                    if repeat == 1:
                        save_report_picture(settings, ab.name, Path(args.report_picture))
            finally:
                pipeline.down()
    analysed = [analyse(run) for run in runs]
    per_run = {name: [metrics[name] for metrics, _, _ in analysed] for name in analysed[0][0]}
    metrics = {name: float(np.nanmedian(values)) if not all(math.isnan(v) for v in values) else math.nan
               for name, values in per_run.items()}
    # Exactness is not a median: any mismatch in any repeat counts; detection must hold in every repeat.
    metrics["attribution_mismatches"] = float(sum(per_run["attribution_mismatches"]))
    metrics["ab_detects_better"] = float(min(per_run["ab_detects_better"]))
    metrics["ab_detects_better_always_valid"] = float(np.mean(per_run["ab_detects_better_always_valid"]))
    metrics.update(shoppers_per_experiment=float(per_experiment), repeats=float(repeats), duration_s=time.monotonic() - started)
    table = Table(title="Simulated shop: A/B, interleaving, A/A and attribution")
    for column in ("metric", *(f"repeat {n}" for n in range(1, repeats + 1)), "result", "target", ""):
        table.add_column(column, justify="left" if column == "metric" else "right", no_wrap=column == "metric")
    fmt = lambda name, v: f"{v:,.0f}" if name in COUNTS else f"{v:.4g}"  # noqa: E731
    for name, value in metrics.items():
        cells = [fmt(name, v) for v in per_run.get(name, [])] + [""] * (repeats - len(per_run.get(name, [])))
        table.add_row(name, *cells, fmt(name, value), *verdict(name, value, TARGETS, LOWER))
    console.print(table)
    console.print("result: the median over repeats, except attribution_mismatches (the sum), ab_detects_better (every "
                  "repeat) and ab_detects_better_always_valid (the share of repeats)")
    plot(analysed[0][1], analysed[0][2], Path(args.plot))
    write_json(args.json, metrics, machine=facts, quick=args.quick, per_repeat=per_run, propensity_shape=args.propensity_shape,
               ab_curve=analysed[0][1], interleaving_curve=analysed[0][2])


if __name__ == "__main__":
    main()
