"""`blackboard policy check | explain`: lint policy files; say what decides an agent's action.
`blackboard approve | reject | approvals`: the human side of approval gates."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from blackboard.approvals import Verdict
from blackboard.cli.common import (
    CLI,
    BoardName,
    Json,
    Url,
    app,
    as_cli,
    confirmed,
    connect,
    console,
    echo_json,
    err,
    run_async,
)
from blackboard.models import Item
from blackboard.policy import Policy

policy_app = typer.Typer(
    help="Policies: who may post, claim, read, cancel, approve which kinds.", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")

Folders = Annotated[list[Path] | None, typer.Argument(help="Policy folders or files (default: ./policies).")]


def _load(folders: list[Path] | None) -> tuple[Policy | None, list[Path]]:
    from blackboard import policy

    chosen = folders or [Path("policies")]
    for f in chosen:
        if not f.exists():
            err.print(f"error: no such folder or file: {f}")
            raise typer.Exit(2)
    try:
        return policy.load(chosen), chosen
    except policy.PolicyError as e:
        err.print(f"error: {e}")
        raise typer.Exit(1) from None


@policy_app.command("check")
def check(folders: Folders = None) -> None:
    """Load the policy files and report the first problem (file:line), exit 1; else a summary."""
    loaded, chosen = _load(folders)
    if loaded is None:
        console.print(f"no policy files in {', '.join(map(str, chosen))}: a board would run open")
        return
    console.print(
        f"ok: {len(loaded.sources)} file(s), {len(loaded.roles)} role(s), "
        f"{len(loaded.principals)} principal(s); version {loaded.version}"
    )


@policy_app.command("explain")
def explain(
    agent: Annotated[str, typer.Option("--agent", help="The principal: an agent's name, cli, http, ...")],
    kind: Annotated[str, typer.Option("--kind", help="The item kind (or a glob an agent claims).")],
    folders: Folders = None,
    as_json: Json = False,
) -> None:
    """What AGENT may do with KIND under these policy files, and which rule decides each action."""
    loaded, _ = _load(folders)
    if loaded is None:
        decisions = {
            a: (True, "open: no policy files") for a in ("post", "claim", "read", "cancel", "approve")
        }
    else:
        decisions = {a: (d.allowed, d.rule) for a, d in loaded.explain(agent, kind).items()}
    if as_json:
        echo_json({a: {"allowed": ok, "rule": rule} for a, (ok, rule) in decisions.items()})
        return
    table = Table("action", "allowed", "rule")
    for action, (ok, rule) in decisions.items():
        table.add_row(action, "yes" if ok else "no", rule)
    console.print(table)


@policy_app.command("clear")
def clear(
    yes: Annotated[bool, typer.Option("--yes", help="Yes, let everything be allowed.")] = False,
    note: Annotated[str, typer.Option("--note", help="Why (kept on the audit record).")] = "",
    url: Url = "memory://",
    board: BoardName = "default",
) -> None:
    """Reopen the board: drop its stored policy, so everything is allowed (audited). Daemons with
    policy files of their own store them again; remove those first."""
    from blackboard import policy

    confirmed(yes, "clearing the policy lets everyone do everything")

    async def main() -> str:
        async with await connect(url, board) as b:
            return await policy.clear(b, note, actor=CLI)

    was = run_async(main)
    console.print(f"policy cleared (was {was or 'none'}): the board runs open")


# -- approvals --------------------------------------------------------------------------------


@app.command("approve")
def approve(
    item_id: Annotated[str, typer.Argument(metavar="ID", help="An item waiting for approval.")],
    note: Annotated[str, typer.Option("--note", help="Why (kept on the item and its audit record).")] = "",
    url: Url = "memory://",
    board: BoardName = "default",
) -> None:
    """Approve an item waiting for approval: it goes on to its dependencies, or opens."""
    _decide(item_id, "approve", note, url, board)


@app.command("reject")
def reject(
    item_id: Annotated[str, typer.Argument(metavar="ID", help="An item waiting for approval.")],
    note: Annotated[str, typer.Option("--note", help="Why (required; the item is dead-lettered with it).")],
    url: Url = "memory://",
    board: BoardName = "default",
) -> None:
    """Reject an item waiting for approval: it is dead-lettered with the note."""
    if not note.strip():
        err.print("error: --note: a rejection needs a note saying why")
        raise typer.Exit(2)
    _decide(item_id, "reject", note, url, board)


def _decide(item_id: str, verdict: Verdict, note: str, url: str, board: str) -> None:
    from blackboard import approvals

    async def main() -> str:
        async with await connect(url, board) as b:
            return (await approvals.decide(b, item_id, verdict, note, actor=CLI)).status.value

    done = "approved" if verdict == "approve" else "rejected"
    console.print(f"{item_id}: {done}, now {run_async(main)}")


@app.command("approvals")
def list_approvals(url: Url = "memory://", board: BoardName = "default", as_json: Json = False) -> None:
    """Items waiting for approval, the soonest deadline first."""

    async def main() -> list[tuple[Item, float | None]]:
        async with await connect(url, board) as b:
            return await as_cli(b).approvals()

    found = run_async(main)
    if as_json:
        echo_json([{"item": it.model_dump(mode="json"), "deadline": d} for it, d in found])
        return
    table = Table("id", "kind", "waiting since", "deadline", "payload")
    for it, deadline in found:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(deadline)) if deadline else "none"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(it.created_at / 1000))
        table.add_row(it.id, it.kind, since, when, escape(json.dumps(it.payload)[:80]))
    console.print(table)


# -- interrupts -------------------------------------------------------------------------------

GoalArg = Annotated[str | None, typer.Argument(metavar="[GOAL]", help="A goal's id (or --all).")]
AllOption = Annotated[
    bool, typer.Option("--all", help="The whole board (--board names which board, as everywhere).")
]
NoteOption = Annotated[str, typer.Option("--note", help="Why (kept on the audit record).")]


@app.command("pause")
def pause(
    goal: GoalArg = None,
    all_: AllOption = False,
    note: NoteOption = "",
    url: Url = "memory://",
    board: BoardName = "default",
) -> None:
    """Stop new claims for a goal (or the whole board, --all); work in flight finishes."""
    _interrupt(True, goal, all_, note, url, board)


@app.command("resume")
def resume(
    goal: GoalArg = None,
    all_: AllOption = False,
    note: NoteOption = "",
    url: Url = "memory://",
    board: BoardName = "default",
) -> None:
    """Undo `pause`: the goal's held items (or the board's claims) go on."""
    _interrupt(False, goal, all_, note, url, board)


def _interrupt(stop: bool, goal: str | None, all_: bool, note: str, url: str, board: str) -> None:
    from blackboard import pausing

    if (goal is None) == (not all_):
        err.print("error: give a goal id or --all (the whole board), not both")
        raise typer.Exit(2)

    async def main() -> int:
        async with await connect(url, board) as b:
            return await (pausing.pause if stop else pausing.resume)(b, goal, note, actor=CLI)

    n = run_async(main)
    if goal is None:
        console.print(f"{'paused' if stop else 'resumed'} board {board}")
    else:
        console.print(
            f"{'paused' if stop else 'resumed'} {goal}: {n} item(s) {'held' if stop else 'reopened'}"
        )
