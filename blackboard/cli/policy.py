"""`blackboard policy check | explain`: lint policy files; say what decides an agent's action."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from blackboard.cli.common import Json, app, console, echo_json, err
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
