"""The trainer's metrics: what the "rejected N cycles in a row" alert reads."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trainer.metrics import STATUSES, TrainerMetrics


def values(metrics: TrainerMetrics) -> dict[tuple[str, tuple], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_rejections_in_a_row_count_up_and_a_publish_resets_them():
    metrics = TrainerMetrics()
    exported = values(metrics)
    assert all(exported[("streamrec_trainer_cycles_total", (("status", status),))] == 0 for status in STATUSES)
    for status in ("rejected", "failed", "skipped", "rejected"):
        metrics.observe(status, champion=3, ended_at=100.0)
    assert values(metrics)[("streamrec_trainer_consecutive_rejections", ())] == 3  # a skipped cycle judges nothing
    metrics.observe("published", champion=3, ended_at=200.0)
    after = values(metrics)
    assert after[("streamrec_trainer_consecutive_rejections", ())] == 0
    assert after[("streamrec_trainer_cycles_total", (("status", "rejected"),))] == 2
    assert after[("streamrec_trainer_last_cycle_timestamp_seconds", ())] == 200.0


def test_unreadable_messages_show_at_once_and_count_once_dead_lettered():
    metrics = TrainerMetrics()
    assert values(metrics)[("streamrec_trainer_dead_letters_total", (("topic", "events.accepted"),))] == 0
    metrics.observe("skipped", champion=3, ended_at=100.0, unreadable=4)  # read, not yet written out
    metrics.observe("published", champion=3, ended_at=200.0, unreadable=5, dead_lettered=5)  # the same four and a new one
    metrics.observe("skipped", champion=4, ended_at=300.0)
    after = values(metrics)
    assert after[("streamrec_trainer_dead_letters_total", (("topic", "events.accepted"),))] == 5
    assert after[("streamrec_trainer_unreadable_messages", ())] == 0
