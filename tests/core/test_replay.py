"""Dataset readers (pure) and the README's main command against the session's stack."""

from __future__ import annotations

import subprocess
import sys

from streamrec.datasets.loaders import load, parse_amazon_text
from streamrec.datasets.replay import catalog_event
from streamrec.topics import Topic
from streamrec.stack.isolated import stack_environment


def test_amazon_text_is_split_into_title_categories_and_brand():
    item = parse_amazon_text(
        "B0000223UV\tGorilla Original Gorilla Glue, Waterproof, 8 ounce Bottle, Brown. "
        "Industrial & Scientific Tapes, Adhesives & Sealants. Gorilla. \n"
    )
    assert item.item_id == "B0000223UV"
    assert item.title == "Gorilla Original Gorilla Glue, Waterproof, 8 ounce Bottle, Brown"
    assert item.category_path == ("Industrial & Scientific", "Tapes, Adhesives & Sealants")
    assert item.brand == "Gorilla"


def test_readers_keep_the_real_rows_in_time_order(data_dir):
    diginetica = load("diginetica", data_dir)
    kinds = [event.kind for event in diginetica.events]
    assert kinds.count("click") == 12_391 and kinds.count("purchase") == 18_025
    times = [event.time_ms for event in diginetica.events]
    assert times == sorted(times)
    assert {item.item_id for item in diginetica.catalog} >= {e.item_id for e in diginetica.events[:100]}

    yoochoose = load("yoochoose", data_dir)
    assert len(yoochoose.events) == 70_278 + 13_568 and yoochoose.catalog == []

    amazon = load("amazon_scientific", data_dir)
    assert len(amazon.catalog) == 1_585 and amazon.synthetic_timing
    for item in amazon.catalog + diginetica.catalog:  # every real row fits the event contract
        catalog_event(item, 1_790_000_000_000)
    first_user = [e.item_id for e in amazon.events if e.user_id == "az-u0"]
    assert first_user == ["B00O47ILVA", "B006ATU73A", "B00CJ5EO2E"]  # user 0 history: items 0 1 2


def test_quickstart_replays_real_events_that_a_consumer_reads_back(settings, data_dir, kafka_reader):
    result = subprocess.run(
        [sys.executable, "-m", "streamrec", "quickstart", "--dataset", "diginetica", "--limit", "10000",
         "--data-dir", str(data_dir)],
        env=stack_environment(settings.stack), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "replayed" in result.stdout and "events.purchases" in result.stdout

    def from_diginetica(value: dict) -> bool:
        return str(value.get("user_id", "")).startswith("dg-")

    clicks = kafka_reader.read(Topic.CLICKS, match=from_diginetica, expected=10_000, timeout_s=5, settle_s=0)
    purchases = kafka_reader.read(Topic.PURCHASES, match=from_diginetica, expected=10_000, timeout_s=5, settle_s=0)
    assert len(clicks) + len(purchases) == 10_000
    assert len(clicks) > 1_000 and len(purchases) > 1_000
    catalog = kafka_reader.read(Topic.CATALOG, match=lambda v: v["item_id"].startswith("dg-"), expected=15_936, timeout_s=15)
    assert len(catalog) == 15_936
