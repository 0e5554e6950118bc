"""``streamrec collector|recs|api|ops ...`` commands, plugged into the core CLI by entry point.

Each service first checks the Kafka and Redis it needs (``streamrec.preflight``): a refused
login or an unreachable address ends it at start with the setting to fix.
"""

from __future__ import annotations

from typing import Annotated

import typer

from streamrec.preflight import check


def _single_threaded_blas() -> None:
    """Serving does many tiny matrix products; BLAS threads make each one wait on the others.

    Measured on the 2-core machine under load: a 60x384 matrix-vector product took 4 ms with
    OpenBLAS's thread pool and 4 µs with one thread. Requests run concurrently on the event
    loop instead, and several worker processes scale across cores.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")

collector_app = typer.Typer(help="HTTP event collector for web and mobile frontends.", no_args_is_help=True)
recs_app = typer.Typer(help="The real-time recommender: profile updates in, recommendation lists out.", no_args_is_help=True)
api_app = typer.Typer(help="The HTTP recommendation API.", no_args_is_help=True)
ops_app = typer.Typer(help="The operations service: lag status, canary, data quality, the live page.", no_args_is_help=True)


@collector_app.command("serve")
def serve(ctx: typer.Context) -> None:
    """Serve POST /v1/events on the configured host and port."""
    import uvicorn

    from serving.collector.app import create_app

    settings = ctx.obj
    check(settings, kafka=True)
    uvicorn.run(create_app(settings), host=settings.collector.host, port=settings.collector.port, log_level="info")


@recs_app.command("worker")
def recs_worker(
    ctx: typer.Context,
    loglevel: Annotated[str, typer.Option(help="Log level of the worker.")] = "warning",
) -> None:
    """Run one recs worker (Faust); several share the profiles.updated partitions."""
    from serving.recs.worker import create_app
    from streamrec.faust_app import run_worker

    check(ctx.obj, kafka=True, redis=True)
    _single_threaded_blas()
    run_worker(create_app(ctx.obj), loglevel=loglevel)


@api_app.command("serve")
def api_serve(ctx: typer.Context) -> None:
    """Serve the recommendation API (OpenAPI docs at /docs)."""
    import uvicorn

    from serving.api.app import create_app

    settings = ctx.obj
    check(settings, redis=True)
    _single_threaded_blas()
    uvicorn.run(create_app(settings), host=settings.api.host, port=settings.api.port, log_level="warning")


@ops_app.command("serve")
def ops_serve(ctx: typer.Context) -> None:
    """Serve the operations page (/), its JSON (/api/overview) and /metrics on ops.host:ops.port."""
    import uvicorn

    from serving.ops.app import create_app

    settings = ctx.obj
    check(settings, kafka=True)
    uvicorn.run(create_app(settings), host=settings.ops.host, port=settings.ops.port, log_level="warning")
