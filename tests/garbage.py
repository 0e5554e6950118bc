"""Garbage for the topics the workers consume, produced straight into Kafka (no contract in the way).

Every consumer's test sends the same kinds, plus a record of its topic's own that looks valid but
has the wrong ``type``: the worker must dead-letter (or count and skip) each one with a reason
and still process the good record sent after them on the same partition.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable

import orjson
from confluent_kafka import Producer

from streamrec.kafka_client import client_config
from streamrec.settings import Settings

HUGE_BYTES = 700_000
"""Well past the dead letters' raw cap, within Kafka's default message size (1 MB)."""
MANY_FIELDS = 20_000
"""Unknown fields in one object: one validation error each, a dead letter of megabytes if the errors were all kept."""


def kinds(marker: str, wrong_type: bytes) -> dict[str, bytes | None]:
    """Name -> value; every value but the empty one and the tombstone contains ``marker``, and no two are alike."""
    tag = marker.encode()
    return {
        "not JSON": b"\x00\xff not json at all " + tag,
        "truncated JSON": b'{"user_id": "' + tag,
        "JSON of the wrong shape": orjson.dumps([marker, {"marker": marker}, 1.5]),
        "a JSON string": orjson.dumps(f"click {marker}"),
        "a wrong type field": wrong_type,
        "many unknown fields": orjson.dumps({"type": "click", **{f"{marker}-{n}": n for n in range(MANY_FIELDS)}}),
        "huge": tag + b"\xfe" * HUGE_BYTES,
        "empty": b"",
        "tombstone": None,
    }


def produce(settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes | None]], partition: int = 0) -> int:
    """Send ``(key, value)`` records to one partition (so that what follows them is behind them); returns
    the epoch ms just before sending."""
    started_ms = int(time.time() * 1000)
    producer = Producer({**client_config(settings.kafka, client="test-garbage"), "acks": "all", "message.max.bytes": 2_000_000})
    for key, value in records:
        producer.produce(topic, value, key, partition=partition)
    assert producer.flush(30) == 0
    return started_ms


def raw_of(letter: dict) -> bytes:
    raw = letter.get("raw", "")
    return base64.b64decode(raw) if letter.get("raw_encoding") == "base64" else raw.encode()


def letter_for(letters: list[dict], value: bytes | None) -> dict | None:
    """The dead letter of ``value`` among ``letters`` (one source's, since the test began): same size,
    its kept payload a prefix of ``value``; of the two empty ones, the tombstone's reason says so."""
    for letter in letters:
        if value is None:
            if letter["raw_bytes"] == 0 and "tombstone" in letter["reason"]:
                return letter
        elif letter["raw_bytes"] == len(value) and value.startswith(raw_of(letter)) and (value or "tombstone" not in letter["reason"]):
            return letter
    return None


def read_letters(kafka_reader, source: str, since_ms: int, expected: int, timeout_s: float = 90) -> list[dict]:
    """Dead letters of ``source`` received since ``since_ms``."""
    return kafka_reader.read("events.dlq", match=lambda v: v.get("source") == source and v.get("received_at", 0) >= since_ms,
                             expected=expected, timeout_s=timeout_s)
