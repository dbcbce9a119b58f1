"""The `blackboard` command. Thin: parse, call the library, print, set the exit code.

Exit codes: 0 ok; 1 an error from the board (message on stderr, no traceback); 2 bad usage;
3 `wait`/`post --wait` timed out.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from blackboard import __version__
from blackboard.board import Board
from blackboard.errors import BlackboardError, InvalidInput
from blackboard.settings import Settings

T = TypeVar("T")

app = typer.Typer(
    name="blackboard",
    help="A runtime for multi-agent systems that coordinate through a shared Redis blackboard.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
dlq_app = typer.Typer(help="Dead letters: items whose attempts ran out.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
console = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # an error stays one line

Url = Annotated[
    str,
    typer.Option(
        "--url",
        "--redis",
        envvar="BLACKBOARD_URL",
        help="Board URL (memory://, redis://host:6379, redis+cluster://...).",
    ),
]
BoardName = Annotated[str, typer.Option("--board", envvar="BLACKBOARD_BOARD", help="Board name.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def echo_json(data: Any) -> None:
    """Print JSON verbatim: rich would wrap long lines and eat [markup] in payloads."""
    typer.echo(json.dumps(data, indent=2, default=str))


def _desc(name: str) -> str:
    return Settings.model_fields[name].description or ""


def _expected(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one board error or timeout a task-group error is about, if that is all it holds."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        else:
            leaves.append(e)
    if len(leaves) == 1 and isinstance(leaves[0], BlackboardError | TimeoutError):
        return leaves[0]
    return None


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; turn board errors into a one-line message and exit code."""
    try:
        try:
            return anyio.run(fn)
        except BaseExceptionGroup as group:  # raised inside a task group (the daemon's, say)
            leaf = _expected(group)
            if leaf is None:
                raise
            raise leaf from None
    except InvalidInput as e:
        err.print(f"error: {e}")
        raise typer.Exit(2) from None
    except BlackboardError as e:
        err.print(f"error: {e}")
        raise typer.Exit(1) from None
    except TimeoutError:
        err.print("error: timed out")
        raise typer.Exit(3) from None


async def interruptible(work: Awaitable[T]) -> T:
    """Await `work` so that Ctrl-C really stops it (see `cancel_on_sigint`); raises
    KeyboardInterrupt when it did. Errors of `work` come out as themselves, not as a group."""
    result: list[T] = []
    error: list[Exception] = []
    async with anyio.create_task_group() as tg:
        if threading.current_thread() is threading.main_thread():
            tg.start_soon(cancel_on_sigint, tg.cancel_scope)
        try:
            result.append(await work)
        except Exception as e:
            error.append(e)
        tg.cancel_scope.cancel()
    if error:
        raise error[0]
    if not result:
        raise KeyboardInterrupt
    return result[0]


async def cancel_on_sigint(scope: anyio.CancelScope) -> None:
    """Ctrl-C cancels `scope`. asyncio's own Ctrl-C handling cancels the main task once, and
    that can be lost: Python 3.11's `asyncio.wait_for` (which redis-py sends through) swallows
    a cancellation that lands as its inner await completes. anyio redelivers a cancelled
    scope's cancellation at every await until the scope is left."""
    with anyio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def connect(url: str, board: str) -> Board:
    return await Board.connect(url, board=board, reconnect_timeout=5.0)


def parse_data(data: str | None) -> Any:
    if data is None:
        return None
    text = data
    if data.startswith("@"):
        path = Path(data[1:])
        if not path.is_file():
            raise InvalidInput("--data", f"no such file: {path}")
        text = path.read_text()
    try:
        return json.loads(text)
    except ValueError as e:
        raise InvalidInput("--data", f"expected JSON or @file.json: {e}") from None


# -- the daemon -------------------------------------------------------------------------------


@app.command()
def run(
    url: Annotated[str | None, typer.Option("--url", "--redis", help=_desc("url"))] = None,
    board: Annotated[str | None, typer.Option(help=_desc("board"))] = None,
    agents: Annotated[
        list[Path] | None, typer.Option("--agents", help=_desc("agents") + " Repeatable.")
    ] = None,
    grace: Annotated[float | None, typer.Option(help=_desc("grace"))] = None,
    host: Annotated[str | None, typer.Option(help=_desc("host"))] = None,
    port: Annotated[int | None, typer.Option(help=_desc("port"))] = None,
    api_token: Annotated[str | None, typer.Option(help=_desc("api_token"))] = None,
    http: Annotated[bool | None, typer.Option("--http/--no-http", help=_desc("http"))] = None,
    reload: Annotated[bool | None, typer.Option("--reload/--no-reload", help=_desc("reload"))] = None,
    entry_points: Annotated[
        bool | None, typer.Option("--entry-points/--no-entry-points", help=_desc("entry_points"))
    ] = None,
    reap_interval: Annotated[float | None, typer.Option(help=_desc("reap_interval"))] = None,
    sweep: Annotated[float | None, typer.Option(help=_desc("sweep"))] = None,
    presence_interval: Annotated[float | None, typer.Option(help=_desc("presence_interval"))] = None,
    strict: Annotated[bool | None, typer.Option("--strict/--open", help=_desc("strict"))] = None,
    log_format: Annotated[str | None, typer.Option(help=_desc("log_format"))] = None,
    log_level: Annotated[str | None, typer.Option(help=_desc("log_level"))] = None,
    config: Annotated[
        Path | None, typer.Option(help="Config file (default ./blackboard.toml if present).")
    ] = None,
    demo: Annotated[
        bool, typer.Option(help="Post the word-count demo goal over README.md and docs/*.md and show it run.")
    ] = False,
    until_idle: Annotated[bool, typer.Option(help="Exit once the board has no unfinished items.")] = False,
) -> None:
    """Run the daemon: load agent plugins, claim and run work, serve HTTP, until SIGTERM/SIGINT.

    Settings come from these flags, then BLACKBOARD_* environment variables (e.g.
    BLACKBOARD_URL, BLACKBOARD_GRACE), then blackboard.toml.
    """
    from pydantic import ValidationError

    from blackboard import logs
    from blackboard.daemon import Daemon, check_bind
    from blackboard.settings import load_settings

    if config is not None and not config.is_file():
        err.print(f"error: --config: no such file: {config}")
        raise typer.Exit(2)
    try:
        settings = load_settings(
            config,
            url=url,
            board=board,
            agents=agents,
            grace=grace,
            host=host,
            port=port,
            api_token=api_token,
            http=http,
            reload=reload,
            strict=strict,
            log_format=log_format,
            log_level=log_level,
            entry_points=entry_points,
            reap_interval=reap_interval,
            sweep=sweep,
            presence_interval=presence_interval,
        )
    except ValidationError as e:
        first = e.errors()[0]
        err.print(f"error: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
        raise typer.Exit(2) from None
    logs.configure(settings.log_format, settings.log_level)

    async def main() -> None:
        check_bind(settings)
        daemon = Daemon(settings, until_idle=until_idle)
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            if demo:
                tg.start_soon(run_demo, daemon)

    run_async(main)


def demo_files(root: Path) -> list[str]:
    """The docs the demo counts: README.md and docs/*.md under `root`."""
    return [str(p) for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


async def run_demo(daemon: Any) -> None:
    from blackboard.display import final_item, follow_goal, render_tree

    if "planner" not in daemon.slots:
        err.print("error: --demo needs the stock agents (agents/wordcount.py); run it from a checkout")
        daemon.stop()
        return
    files = demo_files(Path.cwd())
    goal = await daemon.board.post("wordcount.goal", {"files": files, "top": 10}, actor="demo")
    console.print(f"posted goal {goal.id}: count the words of {len(files)} files")
    tree = await follow_goal(daemon.board, goal.id, console, timeout=120)
    console.print(render_tree(tree))
    table = Table("word", "count", title="most frequent words", min_width=30)
    for word, n in final_item(tree).result["top"]:
        table.add_row(word, str(n))
    console.print(table)
    if daemon.http_url and not daemon.until_idle:
        console.print(f"still serving on {daemon.http_url}; try: curl -s {daemon.http_url}/v1/stats")


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder for the new project (created if missing).")],
) -> None:
    """Scaffold a project: blackboard.toml, agents/ with an example agent, policies/."""
    from blackboard.scaffold import scaffold

    try:
        written = scaffold(directory)
    except FileExistsError as e:
        err.print(f"error: {e} already exists; nothing was written")
        raise typer.Exit(1) from None
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"next: cd {directory} && blackboard run")


# -- working with a board ---------------------------------------------------------------------


@app.command()
def post(
    kind: Annotated[str, typer.Argument(help="Item kind, e.g. research.question.")],
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="Payload: JSON text or @file.json.")
    ] = None,
    priority: Annotated[int, typer.Option(help="0-1000, higher first.")] = 0,
    wait: Annotated[bool, typer.Option(help="Follow the goal's tree live, then print the result.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 300,
    url: Url = "memory://",
    board: BoardName = "default",
    as_json: Json = False,
) -> None:
    """Post an item (a goal, unless it has a parent) and print its id."""
    from blackboard.display import final_item, follow_goal, render_tree

    async def main() -> None:
        payload = parse_data(data)
        async with await connect(url, board) as b:
            since = await b.last_event_id()
            item = await b.post(kind, payload, priority=priority, actor="cli")
            if not wait:
                echo_json(item.model_dump(mode="json")) if as_json else console.print(item.id)
                return
            (err if as_json else console).print(f"posted {item.id}; following its tree")
            tree = await interruptible(follow_goal(b, item.id, None if as_json else console, timeout, since))
            final = final_item(tree)
            if as_json:
                echo_json({"goal": item.id, "final": final.model_dump(mode="json")})
            else:
                console.print(render_tree(tree))
                echo_json(
                    final.result
                    if final.status.value == "done"
                    else {"status": final.status.value, "error": final.error}
                )

    run_async(main)


@app.command("ls")
def list_items(
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    root: Annotated[str | None, typer.Option(help="Only this goal's items.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    url: Url = "memory://",
    board: BoardName = "default",
    as_json: Json = False,
) -> None:
    """List items, newest goals last."""
    from blackboard.display import STATUS_STYLE

    async def main() -> None:
        async with await connect(url, board) as b:
            page = await b.query(kind=kind, status=status, root=root, limit=limit)
        if as_json:
            echo_json([i.model_dump(mode="json") for i in page.items])
            return
        table = Table("id", "kind", "status", "attempts", "agent", "root")
        for i in page.items:
            table.add_row(
                i.id,
                i.kind,
                f"[{STATUS_STYLE[i.status]}]{i.status.value}[/]",
                str(i.attempts),
                i.handled_by or "",
                "" if i.root == i.id else i.root,
            )
        console.print(table)

    run_async(main)


@app.command()
def show(item_id: str, url: Url = "memory://", board: BoardName = "default", as_json: Json = False) -> None:
    """Show one item: payload, status, lease, result or error."""

    async def main() -> None:
        async with await connect(url, board) as b:
            item = await b.get(item_id)
        data = item.model_dump(mode="json")
        echo_json(data) if as_json else typer.echo(
            "\n".join(f"{k:>15}: {json.dumps(v)}" for k, v in data.items() if v not in (None, [], ()))
        )

    run_async(main)


@app.command()
def trace(item_id: str, url: Url = "memory://", board: BoardName = "default", as_json: Json = False) -> None:
    """Show the lineage tree under an item (a goal's whole tree) with statuses and timings."""
    from blackboard.display import render_tree, tree_json

    async def main() -> None:
        async with await connect(url, board) as b:
            tree = await b.tree(item_id)
        echo_json(tree_json(tree)) if as_json else console.print(render_tree(tree))

    run_async(main)


@app.command()
def watch(
    root: Annotated[str | None, typer.Option(help="Only this goal's events.")] = None,
    url: Url = "memory://",
    board: BoardName = "default",
    as_json: Json = False,
) -> None:
    """Print state changes as they happen (Ctrl-C to stop)."""
    from blackboard.display import event_line

    async def main() -> None:
        async with await connect(url, board) as b, anyio.create_task_group() as tg:
            if threading.current_thread() is threading.main_thread():
                tg.start_soon(cancel_on_sigint, tg.cancel_scope)
            async for ev in b.events(root=root):
                typer.echo(ev.model_dump_json() if as_json else event_line(ev))

    with suppress(KeyboardInterrupt):
        run_async(main)


@app.command()
def wait(
    item_id: str,
    timeout: Annotated[float, typer.Option(help="Seconds before giving up (exit 3).")] = 300,
    url: Url = "memory://",
    board: BoardName = "default",
    as_json: Json = False,
) -> None:
    """Wait for an item to finish; print its result. Exit 1 if it died or was cancelled."""

    async def main() -> str:
        async with await connect(url, board) as b:
            item = await interruptible(b.wait(item_id, timeout=timeout))
        echo_json(
            item.model_dump(mode="json")
            if as_json
            else item.result
            if item.status.value == "done"
            else {"status": item.status.value, "error": item.error, "reason": item.reason}
        )
        return item.status.value

    if run_async(main) != "done":
        raise typer.Exit(1)


@app.command()
def agents(url: Url = "memory://", board: BoardName = "default", as_json: Json = False) -> None:
    """List daemons on the board and their agents; dead daemons are marked."""
    from blackboard import presence

    async def main() -> None:
        async with await connect(url, board) as b:
            found = await presence.daemons(b)
        if as_json:
            echo_json([d.model_dump(mode="json") for d in found])
            return
        table = Table("daemon", "state", "agent", "consumes", "produces", "in flight", "done")
        for d in found:
            state = "[green]live[/]" if d.live else "[red]dead[/]"
            for a in d.agents:
                table.add_row(
                    d.id,
                    state,
                    a.name,
                    ",".join(a.consumes),
                    ",".join(a.produces),
                    str(a.in_flight),
                    str(a.completed),
                )
            for source, error in d.plugin_errors.items():
                table.add_row(d.id, state, "[red]plugin error[/]", escape(source), escape(error), "", "")
            if not d.agents and not d.plugin_errors:
                table.add_row(d.id, state, "-", "", "", "", "")
        console.print(table)

    run_async(main)


@app.command()
def cancel(item_id: str, url: Url = "memory://", board: BoardName = "default") -> None:
    """Cancel an item (a goal) and all its unfinished descendants."""

    async def main() -> int:
        async with await connect(url, board) as b:
            return await b.cancel(item_id, "cancelled from the CLI", actor="cli")

    console.print(f"cancelled {run_async(main)} items")


@dlq_app.command("ls")
def dlq_ls(
    url: Url = "memory://", board: BoardName = "default", limit: int = 100, as_json: Json = False
) -> None:
    """List dead letters with their last error."""

    async def main() -> None:
        async with await connect(url, board) as b:
            page = await b.dead_letters(limit=limit)
        if as_json:
            echo_json([i.model_dump(mode="json") for i in page.items])
            return
        table = Table("id", "kind", "attempts", "error")
        for i in page.items:
            table.add_row(i.id, i.kind, str(i.attempts), escape((i.error or "")[:100]))
        console.print(table)

    run_async(main)


@dlq_app.command("retry")
def dlq_retry(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead item ids.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Retry every dead letter.")] = False,
    url: Url = "memory://",
    board: BoardName = "default",
) -> None:
    """Give dead letters a fresh set of attempts."""
    if not ids and not all_:
        err.print("error: give item ids or --all")
        raise typer.Exit(2)

    async def main() -> int:
        async with await connect(url, board) as b:
            chosen = list(ids or [])
            if all_:
                chosen += [i.id for i in (await b.dead_letters(limit=10_000)).items]
            return await b.requeue(chosen, actor="cli") if chosen else 0

    console.print(f"requeued {run_async(main)} items")


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
