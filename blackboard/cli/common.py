"""What every command shares: the Typer apps, consoles, options, and error handling."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import typer
from rich.console import Console

from blackboard import policy
from blackboard.board import Board
from blackboard.errors import BlackboardError, InvalidInput
from blackboard.settings import Settings
from blackboard.views import ReadView

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


CLI = "cli"  # the principal the CLI user acts as under the board's policy


async def connect(url: str, board: str) -> Board:
    """The board, with the policy stored on it in force: the CLI user is held to it as `cli`.
    It has the shard count it was created with (BLACKBOARD_SHARDS, if set, must match it)."""
    shards = os.environ.get("BLACKBOARD_SHARDS")
    count = int(shards) if shards and shards.isdigit() else None
    b = await Board.connect(url, board=board, shards=count, reconnect_timeout=5.0)
    try:
        b.policy = await policy.fetch(b)
    except BaseException:
        await b.close()
        raise
    return b


def as_cli(board: Board) -> ReadView:
    """The board as the CLI user may read it."""
    return ReadView(board, CLI)


def confirmed(yes: bool, what: str) -> None:
    """Exit 2 unless `--yes` was given for an action that can't be undone (`what` it does)."""
    if not yes:
        err.print(f"error: --yes: {what}; say --yes")
        raise typer.Exit(2)


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
