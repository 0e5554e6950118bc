"""``streamrec collector|recs|api ...`` commands, plugged into the core CLI by entry point."""

from __future__ import annotations

from typing import Annotated

import typer

collector_app = typer.Typer(help="HTTP event collector for web and mobile frontends.", no_args_is_help=True)
recs_app = typer.Typer(help="The real-time recommender: profile updates in, recommendation lists out.", no_args_is_help=True)
api_app = typer.Typer(help="The HTTP recommendation API.", no_args_is_help=True)


@collector_app.command("serve")
def serve(ctx: typer.Context) -> None:
    """Serve POST /v1/events on the configured host and port."""
    import uvicorn

    from serving.collector import create_app

    settings = ctx.obj
    uvicorn.run(create_app(settings), host=settings.collector.host, port=settings.collector.port, log_level="info")


@recs_app.command("worker")
def recs_worker(
    ctx: typer.Context,
    loglevel: Annotated[str, typer.Option(help="Log level of the worker.")] = "warning",
) -> None:
    """Run one recs worker (Faust); several share the profiles.updated partitions."""
    import faust

    from serving.recs_app import create_app

    app = create_app(ctx.obj)
    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


@api_app.command("serve")
def api_serve(ctx: typer.Context) -> None:
    """Serve the recommendation API (OpenAPI docs at /docs)."""
    import uvicorn

    from serving.api import create_app

    settings = ctx.obj
    uvicorn.run(create_app(settings), host=settings.api.host, port=settings.api.port, log_level="warning")
