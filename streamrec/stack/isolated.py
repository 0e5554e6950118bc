"""Stacks of their own for tests and benchmarks: free ports, a private state folder."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr

from streamrec.settings import StackSettings
from streamrec.stack.process import free_port

PORT_FIELDS = (
    "kafka_port",
    "kafka_controller_port",
    "redis_port",
    "triton_http_port",
    "triton_grpc_port",
    "triton_metrics_port",
)
OPT_IN_FIELDS = ("kafka_sasl_port", "kafka_sasl_username", "kafka_sasl_password", "redis_acl_username", "redis_acl_password")


def isolated_stack_settings(state_dir: Path, **overrides) -> StackSettings:
    """Stack settings on free ports, so a developer's running stack is never touched."""
    ports = {name: free_port() for name in PORT_FIELDS}
    return StackSettings(state_dir=state_dir, **{**ports, **overrides})


def stack_environment(stack: StackSettings) -> dict[str, str]:
    """Environment that points a `streamrec` subprocess at ``stack`` (and at nothing else)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("STREAMREC_")}
    for name in ("state_dir", "model_repo", *PORT_FIELDS):
        env[f"STREAMREC_STACK__{name.upper()}"] = str(getattr(stack, name))
    for name in OPT_IN_FIELDS:  # the SASL listener and the ACL user, where this stack has them
        value = getattr(stack, name)
        if value is not None:
            env[f"STREAMREC_STACK__{name.upper()}"] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return env
