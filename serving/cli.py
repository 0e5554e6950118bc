"""``streamrec collector ...`` commands, plugged into the core CLI by entry point."""

from __future__ import annotations

import typer

collector_app = typer.Typer(help="HTTP event collector for web and mobile frontends.", no_args_is_help=True)


@collector_app.command("serve")
def serve(ctx: typer.Context) -> None:
    """Serve POST /v1/events on the configured host and port."""
    import uvicorn

    from serving.collector import create_app

    settings = ctx.obj
    uvicorn.run(create_app(settings), host=settings.collector.host, port=settings.collector.port, log_level="info")
