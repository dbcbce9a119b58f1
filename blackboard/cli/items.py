"""Commands that work on a board: post, ls, show, trace, watch, wait, agents, cancel, dlq."""

from __future__ import annotations

import json
import threading
from contextlib import suppress
from typing import Annotated

import anyio
import typer
from rich.markup import escape
from rich.table import Table

from blackboard.cli.common import (
    CLI,
    BoardName,
    Json,
    Url,
    app,
    as_cli,
    cancel_on_sigint,
    confirmed,
    connect,
    console,
    dlq_app,
    echo_json,
    err,
    interruptible,
    parse_data,
    run_async,
)


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
            item = await b.post(kind, payload, priority=priority, actor=CLI)
            if not wait:
                echo_json(item.model_dump(mode="json")) if as_json else console.print(item.id)
                return
            (err if as_json else console).print(f"posted {item.id}; following its tree")
            tree = await interruptible(
                follow_goal(as_cli(b), item.id, None if as_json else console, timeout, since)
            )
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
    """List items, grouped by status and kind, oldest first within each."""
    from blackboard.display import STATUS_STYLE

    async def main() -> None:
        async with await connect(url, board) as b:
            page = await as_cli(b).query(kind=kind, status=status, root=root, limit=limit)
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
            item = await as_cli(b).get(item_id)
        data = item.model_dump(mode="json")
        echo_json(data) if as_json else typer.echo(
            "\n".join(f"{k:>15}: {json.dumps(v)}" for k, v in data.items() if v not in (None, [], ()))
        )

    run_async(main)


@app.command()
def trace(item_id: str, url: Url = "memory://", board: BoardName = "default", as_json: Json = False) -> None:
    """Show the lineage tree under an item (a goal's whole tree) with statuses, timings and model
    usage (calls, tokens, cost per item, and the goal's totals)."""
    from blackboard.display import render_tree, traced, usage_line

    async def main() -> None:
        async with await connect(url, board) as b:
            if as_json:
                echo_json(await traced(as_cli(b), item_id))
                return
            tree = await as_cli(b).tree(item_id)
            console.print(render_tree(tree))
            console.print(usage_line(await b.usage(tree.item.root)))

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
            async for ev in as_cli(b).events(root=root):
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
            item = await interruptible(as_cli(b).wait(item_id, timeout=timeout))
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
            return await b.cancel(item_id, "cancelled from the CLI", actor=CLI)

    console.print(f"cancelled {run_async(main)} items")


@app.command()
def purge(
    older_than: Annotated[
        float, typer.Option("--older-than", min=0, help="Seconds since the goal's whole tree finished.")
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Yes, delete them.")] = False,
    url: Url = "memory://",
    board: BoardName = "default",
) -> None:
    """Delete finished goals from the board, whole trees (audited; under a policy it needs
    `cancel` on `*`). The daemon does this itself with `--retention`."""
    from blackboard import retention

    confirmed(yes, "purging deletes finished goals and their results for good")

    async def main() -> int:
        async with await connect(url, board) as b:
            return await retention.purge_all(b, older_than, actor=CLI)

    console.print(f"purged {run_async(main)} items")


@dlq_app.command("ls")
def dlq_ls(
    url: Url = "memory://", board: BoardName = "default", limit: int = 100, as_json: Json = False
) -> None:
    """List dead letters with their last error."""

    async def main() -> None:
        async with await connect(url, board) as b:
            page = await as_cli(b).dead_letters(limit=limit)
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
                chosen += [i.id for i in (await as_cli(b).dead_letters(limit=10_000)).items]
            return await b.requeue(chosen, actor=CLI) if chosen else 0

    console.print(f"requeued {run_async(main)} items")
