"""``streamrec streams ...`` commands, plugged into the core CLI by entry point."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from streamrec.preflight import check

streams_app = typer.Typer(help="The Faust streams worker: events into profiles in Redis.", no_args_is_help=True)
LogLevel = Annotated[str, typer.Option(help="Log level of the worker.")]


def _run_worker(ctx: typer.Context, create_app: Callable, loglevel: str) -> None:
    """Check Kafka and Redis are reachable, then run the Faust app until stopped."""
    from streamrec.faust_app import run_worker

    check(ctx.obj, kafka=True, redis=True)
    run_worker(create_app(ctx.obj), loglevel=loglevel)


@streams_app.command("worker")
def worker(ctx: typer.Context, loglevel: LogLevel = "warning") -> None:
    """Run one streams worker; start several to share partitions through the consumer group."""
    from streams.app import create_app

    _run_worker(ctx, create_app, loglevel)


@streams_app.command("attribution")
def attribution(ctx: typer.Context, loglevel: LogLevel = "warning") -> None:
    """Run one attribution worker: impressions, clicks, carts and purchases counted per list variant."""
    from streams.attribution.app import create_app

    _run_worker(ctx, create_app, loglevel)
