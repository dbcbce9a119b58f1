"""The `blackboard` command. Thin: parse, call the library, print, set the exit code.

Exit codes: 0 ok; 1 an error from the board (message on stderr, no traceback); 2 bad usage;
3 `wait`/`post --wait` timed out.

Commands live in `daemon` (run, init), `items` (post, ls, show, trace, watch, wait, agents,
cancel, dlq), `audit` (tail, verify, export), `policy` (check, explain), `acl` (render) and
`mcp` (the MCP server over stdio); `common` holds what they share.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from blackboard import __version__
from blackboard.cli import acl, audit, daemon, items, mcp, policy  # noqa: F401 - importing them registers their commands
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
def loadtest(
    url: Url = "redis://127.0.0.1:6379",
    agents: Annotated[int, typer.Option(min=1, max=100_000, help="Simulated agents in all.")] = 2000,
    processes: Annotated[int, typer.Option(min=1, max=16, help="Processes the agents run in.")] = 2,
    duration: Annotated[float, typer.Option(min=0.1, max=600, help="Seconds measured.")] = 20.0,
    think: Annotated[float, typer.Option(min=0, help="Mean seconds an agent works on an item.")] = 0.5,
    rate: Annotated[
        float | None, typer.Option(min=0.1, help="Items posted per second (default: agents / think).")
    ] = None,
    shards: Annotated[int, typer.Option(min=1, max=256, help="Shards of the board it creates.")] = 1,
    batch: Annotated[
        int,
        typer.Option(
            min=1, max=1000, help="Items an agent claims and completes per call (a runner's batching)."
        ),
    ] = 1,
    backlog: Annotated[
        int,
        typer.Option(min=0, max=2_000_000, help="Items posted before the agents start (a queue to drain)."),
    ] = 0,
) -> None:
    """Simulate a large population of agents (claim, think, complete) against a local Redis (or
    a local Redis Cluster, redis+cluster://) and report claims/s, pickup latency, CPU and Redis
    memory per item; prints one JSON object."""
    from blackboard.bench.loadtest import run_loadtest

    report = run_async(
        lambda: run_loadtest(
            url,
            agents=agents,
            processes=processes,
            duration=duration,
            think=think,
            rate=rate,
            shards=shards,
            batch=batch,
            backlog=backlog,
        )
    )
    typer.echo(json.dumps(report, indent=2))


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


def main() -> None:  # pragma: no cover
    sys.exit(app())
