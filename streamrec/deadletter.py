"""Dead-letter records: what was rejected, why, and the raw payload to replay it.

Every component that refuses input (the collector, the SDK's callers, the
streams workers) writes one of these to ``events.dlq`` so that nothing is lost
silently. The raw payload is kept as text when it is valid UTF-8 and as base64
otherwise; payloads longer than the configured cap are truncated and flagged,
with their full size and SHA-256 kept for reconciliation. A record without a value (a Kafka
tombstone) is kept as an empty payload; its reason says so.

The reason and the field-level details are capped too (``MAX_REASON_CHARS``, ``MAX_ERRORS``,
``MAX_ERROR_CHARS``): garbage with thousands of unknown fields, or one field name of a
megabyte, would otherwise make a dead letter larger than Kafka takes, and a consumer that
cannot deliver its dead letter cannot move past the record.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_REASON_CHARS = 1000
MAX_ERRORS = 20
"""Field-level details kept per dead letter; the reason already says how many more there were."""
MAX_ERROR_CHARS = 300
"""Characters kept of each detail's ``loc``, ``msg`` and ``type``."""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DeadLetter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    reason: str = Field(description="One line saying why the input was rejected.")
    errors: list[dict[str, str]] = Field(default_factory=list, description="Field-level details, when known.")
    source: str = Field(description="Which component rejected it, e.g. 'collector'.")
    received_at: int = Field(default_factory=lambda: int(time.time() * 1000), description="Epoch ms.")
    event_id: str | None = None
    index: int | None = Field(default=None, description="Position of the event in its batch, when batched.")
    raw: str
    raw_encoding: Literal["utf-8", "base64"]
    raw_bytes: int
    raw_sha256: str
    raw_truncated: bool = False

    @classmethod
    def wrap(
        cls,
        raw: bytes | None,
        *,
        reason: str,
        source: str,
        max_raw_bytes: int,
        errors: list[dict[str, str]] | None = None,
        event_id: str | None = None,
        index: int | None = None,
    ) -> "DeadLetter":
        raw = raw or b""  # a tombstone: nothing to keep but the reason
        kept = raw[:max_raw_bytes]
        try:
            text, encoding = kept.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
        details = [{key: _clip(str(value), MAX_ERROR_CHARS) for key, value in error.items()}
                   for error in (errors or [])[:MAX_ERRORS]]
        return cls(
            reason=_clip(reason, MAX_REASON_CHARS),
            errors=details,
            source=source,
            event_id=event_id,
            index=index,
            raw=text,
            raw_encoding=encoding,
            raw_bytes=len(raw),
            raw_sha256=hashlib.sha256(raw).hexdigest(),
            raw_truncated=len(raw) > max_raw_bytes,
        )

    def raw_payload(self) -> bytes:
        """The (possibly truncated) payload as it arrived."""
        return base64.b64decode(self.raw) if self.raw_encoding == "base64" else self.raw.encode("utf-8")

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()
