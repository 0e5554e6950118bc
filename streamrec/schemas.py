"""Every JSON Schema streamrec publishes, by file name: the events shops send and each internal
topic's messages. ``streamrec schemas`` writes them to ``docs/schemas``; a test keeps that folder
equal to this."""

from __future__ import annotations

from streamrec import events, messages


def schema_files() -> dict[str, dict]:
    """``{file name: JSON Schema}``, e.g. ``click.v1.schema.json``, ``profiles.updated.v1.schema.json``."""
    files = {f"{name}.v{events.SCHEMA_VERSION}.schema.json": schema for name, schema in events.json_schemas().items()}
    files.update({f"{topic}.v{messages.SCHEMA_VERSION}.schema.json": schema for topic, schema in messages.json_schemas().items()})
    return files
