"""``streamrec streams ...`` commands, plugged into the core CLI by entry point."""

from __future__ import annotations

from typing import Annotated

import typer

from streamrec.preflight import check

streams_app = typer.Typer(help="The Faust streams worker: events into profiles in Redis.", no_args_is_help=True)


@streams_app.command("worker")
def worker(
    ctx: typer.Context,
    loglevel: Annotated[str, typer.Option(help="Log level of the worker.")] = "warning",
) -> None:
    """Run one streams worker; start several to share partitions through the consumer group."""
    import faust

    from streams.app import create_app

    check(ctx.obj, kafka=True, redis=True)
    app = create_app(ctx.obj)
    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


@streams_app.command("attribution")
def attribution(
    ctx: typer.Context,
    loglevel: Annotated[str, typer.Option(help="Log level of the worker.")] = "warning",
) -> None:
    """Run one attribution worker: impressions, clicks, carts and purchases counted per list variant."""
    import faust

    from streams.attribution.app import create_app

    check(ctx.obj, kafka=True, redis=True)
    app = create_app(ctx.obj)
    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
