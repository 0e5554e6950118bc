"""Prometheus metrics of `streamrec trainer run`: cycles by outcome and rejections in a row.

The trainer serves nothing over HTTP, so an operator would otherwise learn that its gate keeps
rejecting (new data the model cannot learn, or a drifting hold-out) only from its log. The
counter and the run of consecutive rejections are what the alert rules read. Unreadable
messages on ``events.accepted`` show twice: at once, as the last cycle's count, and once
dead-lettered (which waits for a publish: the version published moves past them).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from streamrec.topics import Topic

STATUSES = ("published", "rejected", "failed", "skipped")
ACCEPTED = Topic.ACCEPTED.value


class TrainerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.cycles = Counter("streamrec_trainer_cycles", "Trainer cycles by outcome.", ["status"], registry=r)
        for status in STATUSES:
            self.cycles.labels(status)  # every outcome exported from the start, at 0
        self.consecutive_rejections = Gauge(
            "streamrec_trainer_consecutive_rejections", "Cycles in a row the gate or Triton rejected (0 after a publish).", registry=r
        )
        self.last_cycle = Gauge("streamrec_trainer_last_cycle_timestamp_seconds", "When the last cycle ended.", registry=r)
        self.served_version = Gauge("streamrec_trainer_champion_version", "Version the last cycle started from.", registry=r)
        self.unreadable = Gauge(
            "streamrec_trainer_unreadable_messages", "Messages on events.accepted the last cycle could not read.", registry=r
        )
        self.dead_letters = Counter(
            "streamrec_trainer_dead_letters", "Unreadable messages written to events.dlq, by the topic they were read from.",
            ["topic"], registry=r,
        )
        self.dead_letters.labels(ACCEPTED)

    def observe(self, status: str, champion: int | None, ended_at: float, *, unreadable: int = 0, dead_lettered: int = 0) -> None:
        self.cycles.labels(status).inc()
        self.unreadable.set(unreadable)
        self.dead_letters.labels(ACCEPTED).inc(dead_lettered)
        if status in ("rejected", "failed"):
            self.consecutive_rejections.inc()
        elif status == "published":
            self.consecutive_rejections.set(0)
        if champion is not None:
            self.served_version.set(champion)
        self.last_cycle.set(ended_at)

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)
