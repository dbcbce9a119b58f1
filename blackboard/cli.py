"""The `blackboard` command. Thin: parse, call one public function, set the exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import anyio
import typer
from rich.console import Console

from blackboard import __version__
from blackboard.errors import BlackboardError

app = typer.Typer(
    name="blackboard",
    help="A runtime for multi-agent systems that coordinate through a shared Redis blackboard.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

URL_OPTION = typer.Option(
    "--redis", "--url", envvar="BLACKBOARD_URL",
    help="Board URL: memory:// (embedded), redis://host:6379, rediss://, "
    "redis+sentinel://host:26379/service, redis+cluster://host:7000.",
)  # fmt: skip


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/] {message}")
    return typer.Exit(code)


@app.command()
def demo(
    url: Annotated[str, URL_OPTION] = "memory://demo",
    files: Annotated[list[Path] | None, typer.Argument(help="Text files to count (default: README.md, docs/*.md).")] = None,
    top: Annotated[int, typer.Option(min=1, max=100, help="How many words to show.")] = 10,
) -> None:
    """Run the demo: a word-count map-reduce whose workers coordinate only through the board."""
    from blackboard.demo import default_files, run_demo

    chosen = files or default_files(Path.cwd())
    missing = [str(f) for f in chosen if not f.is_file()]
    if missing:
        raise fail(f"not a file: {', '.join(missing)}", 2)
    try:
        anyio.run(run_demo, url, chosen, console, top)
    except BlackboardError as e:
        raise fail(str(e)) from None


@app.command()
def bench(
    url: Annotated[str, URL_OPTION] = "memory://bench",
    scale: Annotated[float, typer.Option(min=0.001, max=100, help="Multiply every workload size.")] = 1.0,
    only: Annotated[str | None, typer.Option(help="Comma-separated metric names to run.")] = None,
) -> None:
    """Measure post/drain rates and latencies; prints one JSON object."""
    from blackboard.bench import run_bench

    try:
        report = anyio.run(lambda: run_bench(url, scale=scale, only=only.split(",") if only else None))
    except BlackboardError as e:
        raise fail(str(e)) from None
    typer.echo(json.dumps(report, indent=2))


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)
