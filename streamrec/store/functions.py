"""The Redis function library the stores call (``functions.lua``, library ``streamrec``).

Redis keeps the library with its data; the streams worker (re)loads it when it starts, so a
new version of the functions is in place before its first batch. The HTTP services' rate
limiter loads it when Redis answers that its function is missing (a Redis the streams worker
has not started on yet).
"""

from __future__ import annotations

from importlib.resources import files

import redis.asyncio as redis

APPLY_STATISTICS = "streamrec_apply_statistics"
SET_PROFILES = "streamrec_set_profiles"
HASH_FIELDS = "streamrec_hash_fields"
RATE_LIMIT = "streamrec_rate_limit"


def library_source() -> str:
    return files("streamrec.store").joinpath("functions.lua").read_text()


async def load_functions(client: redis.Redis) -> None:
    """Install (or replace) the library."""
    await client.function_load(library_source(), replace=True)
