"""The `blackboard` command. Thin: parse, call the library, print, set the exit code.

Exit codes: 0 ok; 1 an error from the board (message on stderr, no traceback); 2 bad usage;
3 `wait`/`post --wait` timed out.

Commands live in `daemon` (run, init), `items` (post, ls, show, trace, watch, wait, agents,
cancel, dlq), `audit` (tail, verify, export), `policy` (check, explain) and `acl` (render);
`common` holds what they share.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from blackboard import __version__
from blackboard.cli import acl, audit, daemon, items, policy  # noqa: F401 - importing them registers their commands
from blackboard.cli.common import Url, app, run_async

__all__ = ["app", "main"]


@app.command()
def bench(
    url: Url = "memory://bench",
    scale: Annotated[float, typer.Option(min=0.001, max=100, help="Multiply every workload size.")] = 1.0,
    only: Annotated[str | None, typer.Option(help="Comma-separated metric names to run.")] = None,
) -> None:
    """Measure post/drain rates and latencies against a board; prints one JSON object."""
    from blackboard.bench import run_bench

    report = run_async(lambda: run_bench(url, scale=scale, only=only.split(",") if only else None))
    typer.echo(json.dumps(report, indent=2))


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


def main() -> None:  # pragma: no cover
    sys.exit(app())
