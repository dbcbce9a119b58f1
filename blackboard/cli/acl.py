"""`blackboard acl render`: the Redis ACL user that confines a daemon to one board."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from blackboard.cli.common import app, err

acl_app = typer.Typer(help="Redis ACLs: isolation of a board below the runtime.", no_args_is_help=True)
app.add_typer(acl_app, name="acl")


@acl_app.command("render")
def render(
    board: Annotated[str, typer.Option("--board", help="The board the user may reach.")],
    principal: Annotated[str, typer.Option("--principal", help="Who connects as it, e.g. daemon.")],
    password_env: Annotated[
        str | None,
        typer.Option(help="Environment variable holding the password (default: a fresh random one)."),
    ] = None,
) -> None:
    """Print the ACL SETUSER command (for redis-cli or an ACL file) of a user that can reach only
    BOARD's keys, with only the commands the runtime sends. The daemon then connects as it:
    redis://USER:PASSWORD@host:6379."""
    from blackboard import acl

    password = os.environ.get(password_env) if password_env else None
    if password_env and not password:
        err.print(f"error: --password-env: ${password_env} is not set")
        raise typer.Exit(2)
    try:
        command, password = acl.render(board, principal, password)
    except ValueError as e:
        err.print(f"error: {e}")
        raise typer.Exit(2) from None
    typer.echo(command)
    user = acl.user_name(board, principal)
    err.print(f"# then connect as it: BLACKBOARD_URL=redis://{user}:<password>@HOST:6379")
    if not password_env:
        err.print(f"# its password (shown once): {password}")
