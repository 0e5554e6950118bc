"""``streamrec trainer run`` (long-running) and ``streamrec trainer once`` (one cycle)."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streamrec.settings import Settings

console = Console(highlight=False)
trainer_app = typer.Typer(help="The incremental trainer: fine-tune the scorer on new events, gate, republish.",
                          no_args_is_help=True)
UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_interval(text: str) -> float:
    """``90``, ``90s``, ``5m`` or ``1h`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r}: expected a positive duration like 90s, 5m or 1h")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def _settings(ctx: typer.Context) -> Settings:
    root = ctx.find_root()
    return root.obj if isinstance(root.obj, Settings) else Settings()


def _print(result) -> None:
    table = Table(title=f"trainer cycle: {result.status}")
    table.add_column("field")
    table.add_column("value")
    rows = {
        "champion": result.champion, "version": result.version, "events used": f"{result.events_used:,}",
        "examples": json.dumps(result.examples), "duration": f"{result.duration_s:.1f} s",
        "timings": json.dumps(result.timings), "reason": result.reason or "-",
    }
    if result.gate:
        rows["challenger"] = json.dumps({k: round(v, 4) for k, v in result.gate["challenger"].items()})
        rows["champion figures"] = json.dumps({k: round(v, 4) for k, v in result.gate["champion"].items()})
    for name, value in rows.items():
        table.add_row(name, str(value))
    console.print(table)


def _cycle(settings: Settings):
    from trainer.cycle import run_cycle

    return run_cycle(settings, say=lambda message: console.print(f"[dim]·[/dim] {message}"))


@trainer_app.command()
def once(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the cycle's result as JSON.")] = False,
) -> None:
    """Run one cycle; exit 0 when it published or had nothing to do, 3 when the gate or Triton rejected it."""
    result = _cycle(_settings(ctx))
    if as_json:
        print(json.dumps(result.to_dict(), default=str))
    else:
        _print(result)
    if result.status in ("rejected", "failed"):
        raise typer.Exit(3)


@trainer_app.command()
def run(
    ctx: typer.Context,
    interval: Annotated[str | None, typer.Option(help="Time between cycle starts, e.g. 5m (default: settings).")] = None,
) -> None:
    """Run cycles forever; SIGTERM lets the current cycle finish (publishes are never cut short)."""
    settings = _settings(ctx)
    seconds = parse_interval(interval) if interval else settings.trainer.interval_s
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    console.print(f"trainer: {settings.trainer.model} every {seconds:.0f} s")
    while not stop.is_set():
        began = time.monotonic()
        try:
            _print(_cycle(settings))
        except Exception as error:  # noqa: BLE001 - a failed cycle must not end the service; the next one retries
            console.print(f"[red]cycle failed:[/red] {type(error).__name__}: {error}")
        stop.wait(max(0.0, seconds - (time.monotonic() - began)))
